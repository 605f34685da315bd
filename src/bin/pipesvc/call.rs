//! `pipesvc call`: one request, its response on stdout. With `--method`,
//! a typed call (protocol 2): JSON params in, the JSON result out; a
//! streaming method's items one JSON line each (revision 2.2).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pipesvc::client::{CallOptions, RawStream, DEADLINE_GRACE};
use pipesvc::protocol::{Encoding, Entry};
use pipesvc::Error;

use crate::output::{self, Out};
use crate::session::{ClientArgs, Session};

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Call this method of the service (see `pipesvc methods`) with
    /// PARAMS_JSON, and print its result as JSON. A streaming method's
    /// items are printed as they come, one JSON line each, then its result
    /// unless that is null; the command exits when the stream ends. If
    /// stdout is closed (`| head -3`), the stream is cancelled and the
    /// command exits at once (on Windows: at the next item), with status 0. Exit status: 0 on
    /// success, 1 when the service answers with an error (its code and
    /// message go to stderr), 2 when the call could not be made (no
    /// connection, a protocol error, bad PARAMS_JSON). The deadline sent
    /// with the call is what is left of --timeout, less a margin (half of
    /// it, at most 0.25 s) for the service's `timed out` answer to arrive.
    #[arg(long, value_name = "METHOD")]
    method: Option<String>,
    /// Print the response's bytes as they are, without a line feed after
    /// them (for a binary response, into a file or a pipe). Without it,
    /// the response is shown as text: control and invisible characters
    /// escaped (line feeds and tabs kept), bytes that are not UTF-8 as
    /// \xNN.
    #[arg(long, conflicts_with = "method")]
    raw: bool,
    /// The request payload (sent as UTF-8); with --method, the params as
    /// JSON (default: null).
    #[arg(
        value_name = "MESSAGE | PARAMS_JSON",
        required_unless_present = "method"
    )]
    message: Option<String>,
}

/// Exit status of a typed call the service answered with an error.
const SERVICE_ERROR: u8 = 1;
/// Exit status of a typed call that could not be made.
const CALL_FAILED: u8 = 2;

pub async fn run(args: CallArgs) -> pipesvc::Result<ExitCode> {
    let Some(method) = args.method.as_deref() else {
        let message = args
            .message
            .clone()
            .expect("clap requires MESSAGE without --method");
        return bytes_call(&args.target, message, args.raw)
            .await
            .map(|()| ExitCode::SUCCESS);
    };
    Ok(
        match typed_call(&args.target, method, args.message.as_deref()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                output::error(&report(&err));
                ExitCode::from(exit_status(&err))
            }
        },
    )
}

async fn bytes_call(target: &ClientArgs, message: String, raw: bool) -> pipesvc::Result<()> {
    let session = target.connect().await?;
    let request = session.client().request(message);
    let response = session
        .step("waiting for the answer to the request", request)
        .await;
    session.close().await;
    let response = response?;
    let mut out = Out::stdout();
    match raw {
        true => out.raw(&response)?,
        false => out.text(&response)?,
    }
    out.finish()
}

async fn typed_call(
    target: &ClientArgs,
    method: &str,
    params: Option<&str>,
) -> pipesvc::Result<()> {
    // Checked here, so that a typo is not sent to the service.
    let params: serde_json::Value = serde_json::from_str(params.unwrap_or("null"))
        .map_err(|e| Error::config("PARAMS_JSON", format!("not JSON: {e}")))?;
    let session = target.connect().await?;
    let options = CallOptions::new()
        .encoding(Encoding::Json)
        .timeout(Some(sent_deadline(&session)));
    let params = serde_json::to_vec(&params).expect("a JSON value always serializes");
    if session.client().stream_window().is_some() {
        return streamed_call(session, method, &params, &options).await;
    }
    let call = session
        .client()
        .call_raw(method, Encoding::Json, &params, &options);
    let result = session
        .step("waiting for the answer to the call", call)
        .await;
    session.close().await;
    let result: serde_json::Value = serde_json::from_slice(&result?).map_err(|e| {
        let method = output::field(method, output::NAME_SHOWN);
        Error::Protocol(format!("the result of \"{method}\" is not JSON: {e}"))
    })?;
    let mut out = Out::stdout();
    out.json(&result)?;
    out.finish()
}

/// A typed call to a server of revision 2.2, which may answer with a
/// stream: each item printed as it comes, then the result (always if no
/// item came, as for a method that does not stream; else unless it is
/// null). The whole stream fits in `--timeout`, as any call does.
async fn streamed_call(
    session: Session,
    method: &str,
    params: &[u8],
    options: &CallOptions,
) -> pipesvc::Result<()> {
    let client = session.client();
    let opening = client.stream_raw(method, Encoding::Json, params, options);
    let mut stream = session.step(WAITING, opening).await?;
    let mut out = Out::stdout();
    let mut items = 0u64;
    let closed = output::stdout_closed();
    tokio::pin!(closed);
    let outcome = loop {
        let next = session.step(WAITING, next_entry(&mut stream));
        let entry = tokio::select! {
            entry = next => entry,
            // The reader had enough: cancel (dropping the stream) and go.
            () = &mut closed => {
                drop(stream);
                session.close().await;
                return Ok(());
            }
        };
        let entry = match entry {
            Ok(Some(entry)) => entry,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let Entry::Item(bytes) = entry else { continue };
        let printed = json("an item", method, &bytes).and_then(|value| out.item(&value));
        match printed {
            Ok(()) => items += 1,
            // The reader had enough: cancel (dropping the stream) and go.
            Err(e) if output::is_closed_stdout(&e) => {
                drop(stream);
                session.close().await;
                return Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    let result = match outcome {
        Ok(()) => session.step(WAITING, stream.finish()).await,
        Err(e) => Err(e),
    };
    session.close().await;
    let result = json("the result", method, &result?)?;
    if items == 0 || !result.is_null() {
        out.json(&result)?;
    }
    out.finish()
}

/// What every wait of a typed call is named in a timeout.
const WAITING: &str = "waiting for the answer to the call";

/// The stream's next entry; an error ending it is the call's error.
async fn next_entry(stream: &mut RawStream) -> pipesvc::Result<Option<Entry>> {
    stream.next().await.transpose()
}

/// `what` (an item, the result) of `method` as JSON.
fn json(what: &str, method: &str, bytes: &[u8]) -> pipesvc::Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        let method = output::field(method, output::NAME_SHOWN);
        Error::Protocol(format!("{what} of \"{method}\" is not JSON: {e}"))
    })
}

/// The deadline a typed call sends: what is left of `--timeout`, less a
/// margin in which the service's ERROR `timed out` can still arrive within
/// it: half of what is left, at most half of [`DEADLINE_GRACE`] (so that
/// the client's own wait, the deadline and the grace, ends after
/// `--timeout`, which names the timeout).
fn sent_deadline(session: &Session) -> Duration {
    let left = session.left();
    let margin = (DEADLINE_GRACE / 2).min(left / 2);
    // A deadline of 0 would mean none: at least a millisecond.
    (left - margin).max(Duration::from_millis(1))
}

/// 1 when the service answered the call with an ERROR (a code of its own,
/// or one such as `unknown method`, `bad request`, `timed out`); 2 when
/// the call did not get that far.
pub fn exit_status(err: &Error) -> u8 {
    match err {
        Error::Remote { .. } | Error::Server { .. } => SERVICE_ERROR,
        _ => CALL_FAILED,
    }
}

/// `error 12 (unknown method): no method "nope"` for a service error; the
/// whole chain of causes for anything else.
pub fn report(err: &Error) -> String {
    match err {
        Error::Remote { code, message } | Error::Server { code, message } => {
            let message = output::field(message, output::ERROR_SHOWN);
            format!("error {} ({}): {message}", code.0, code.name())
        }
        other => pipesvc::ops::error_report(other),
    }
}
