//! The job runner's API, shared by `job_service` and `job_client`: its
//! messages and methods, so that both sides agree on every type.
#![allow(dead_code)] // each side uses part of it

use pipesvc::protocol::ServiceCode;
use pipesvc::rpc::{Method, StreamMethod, Topic};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub type JobId = u64; // from 1

/// Work to run: `steps` steps of 100 ms each (simulated).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Submit {
    pub name: String,
    pub steps: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum State {
    Running { done: u32 },
    Finished,
    Cancelled,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub id: JobId,
    pub submit: Submit,
    pub state: State,
}

pub const SUBMIT: Method<Submit, JobId> = Method::new("submit", "Queue a job; returns its id");
pub const LIST: Method<(), Vec<Job>> = Method::new("list", "Every job, oldest first");
pub const STATUS: Method<JobId, Job> = Method::new("status", "One job and its state");
pub const CANCEL: Method<JobId, Job> = Method::new("cancel", "Stops a job; returns it");
/// The job's state as it changes, from its state now until it ends (a
/// stream of items: no routing of our own); the result is its last state.
pub const PROGRESS: StreamMethod<JobId, (), State, State> =
    StreamMethod::server("progress", "The job's state at each change until it ends");
/// Every job that ended (finished or cancelled), published to whoever
/// subscribed: no subscriber list of our own.
pub const FINISHED: Topic<Job> = Topic::new("finished", "Every job that finished or was cancelled");
/// The error for a job id the service does not know.
pub const NO_SUCH_JOB: ServiceCode = ServiceCode::new(1404).unwrap();
