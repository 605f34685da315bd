//! A job runner as a typed service: `cargo run --example job_service [NAME]`,
//! then `JOBS_NAME=NAME cargo run --example job_client -- submit build 5`.

#[path = "job_api/mod.rs"]
pub mod job_api;
use job_api::*;
use pipesvc::rpc::Service;
use pipesvc::server::{ConnectionContext, Publisher, Rule, Server, ServiceError};
use pipesvc::transport::UserKey;
use std::{collections::BTreeMap, future::ready, sync::Arc, sync::Mutex, time::Duration};
use tokio::{sync::watch, task::AbortHandle};

/// Every job, with the task running it, the user who submitted it and
/// where its state changes are announced (to `progress` streams).
pub type Jobs = Mutex<BTreeMap<JobId, Entry>>;
type Entry = (Job, AbortHandle, Option<UserKey>, watch::Sender<State>);

/// The service: a handler per method, no dispatch or encoding of our own.
pub fn service() -> Service<Jobs> {
    Service::new("jobs", "1.0.0", Jobs::default())
        .topic(&FINISHED)
        .method(
            &SUBMIT,
            |jobs, submit: Submit, ctx: ConnectionContext| async move {
                let mut table = jobs.lock().unwrap();
                let id = table.len() as JobId + 1;
                let publisher = ctx.publisher().cloned();
                let task = tokio::spawn(work(jobs.clone(), id, submit.clone(), publisher));
                let job = Job {
                    id,
                    submit,
                    state: State::Running { done: 0 },
                };
                let owner = ctx.caller().user_key();
                let (changes, _) = watch::channel(job.state.clone());
                table.insert(id, (job, task.abort_handle(), owner, changes));
                Ok(id)
            },
        )
        .method(&LIST, |jobs, (), _| async move {
            let table = jobs.lock().unwrap();
            Ok(table.values().map(|(job, ..)| job.clone()).collect())
        })
        .method(&STATUS, |jobs, id, _| ready(with_job(&jobs, id, |_| ())))
        .stream_method(&PROGRESS, |jobs, id: JobId, items, _, _| async move {
            let mut changes = None;
            with_job(&jobs, id, |entry| changes = Some(entry.3.subscribe()))?;
            let mut changes = changes.expect("set by with_job");
            loop {
                let state = changes.borrow_and_update().clone();
                items.send(&state).await?;
                if !matches!(state, State::Running { .. }) || changes.changed().await.is_err() {
                    return Ok(state);
                }
            }
        })
        .method(&CANCEL, |jobs, id, ctx: ConnectionContext| {
            let publisher = ctx.publisher().cloned();
            let cancel = |(job, task, _, changes): &mut Entry| {
                task.abort();
                if let State::Running { .. } = job.state {
                    set_state(job, changes, State::Cancelled);
                    announce(publisher.as_ref(), job);
                }
            };
            ready(owner_or_admin(&jobs, id, &ctx).and_then(|()| with_job(&jobs, id, cancel)))
        })
}

/// Only the user who submitted job `id`, or an administrator, may cancel
/// it: anyone else gets ERROR `not allowed` naming the rule.
fn owner_or_admin(jobs: &Jobs, id: JobId, ctx: &ConnectionContext) -> Result<(), ServiceError> {
    match jobs.lock().unwrap().get(&id) {
        Some((_, _, owner, _)) if *owner != ctx.caller().user_key() => ctx.require(&Rule::admin()),
        _ => Ok(()),
    }
}

/// Runs `f` on job `id` and returns the job as it is then.
fn with_job(jobs: &Jobs, id: JobId, f: impl FnOnce(&mut Entry)) -> Result<Job, ServiceError> {
    let mut table = jobs.lock().unwrap();
    let Some(entry) = table.get_mut(&id) else {
        return Err(ServiceError::with_code(NO_SUCH_JOB, format!("no job {id}")));
    };
    f(entry);
    Ok(entry.0.clone())
}

/// The job's new state, announced to its `progress` streams.
fn set_state(job: &mut Job, changes: &watch::Sender<State>, state: State) {
    job.state = state.clone();
    changes.send_replace(state);
}

/// Tells every subscriber of [`FINISHED`] that `job` ended.
fn announce(publisher: Option<&Publisher>, job: &Job) {
    if let Some(publisher) = publisher {
        publisher.publish(&FINISHED, job);
    }
}

/// The simulated work: a timer per step, the state updated after each.
async fn work(jobs: Arc<Jobs>, id: JobId, submit: Submit, publisher: Option<Publisher>) {
    for done in 1..=submit.steps {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let step =
            |(job, _, _, changes): &mut Entry| set_state(job, changes, State::Running { done });
        let _ = with_job(&jobs, id, step);
    }
    let finish = |(job, _, _, changes): &mut Entry| {
        set_state(job, changes, State::Finished);
        announce(publisher.as_ref(), job);
    };
    let _ = with_job(&jobs, id, finish);
}

#[allow(dead_code)] // tests include this file for `service`
#[tokio::main]
async fn main() -> pipesvc::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "jobs".into());
    let server = Server::builder(name.parse()?).calls(service()).bind()?;
    println!("jobs listening on {}", server.endpoint());
    let stop = async { tokio::signal::ctrl_c().await.unwrap() };
    server.serve_until(stop).await
}
