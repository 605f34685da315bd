//! `pipesvc call`: one request, its response on stdout. With `--method`,
//! a typed call (protocol 2): JSON params in, the JSON result out.

use std::io::Write;
use std::process::ExitCode;

use crate::ClientArgs;
use clap::Args;
use pipesvc::client::CallOptions;
use pipesvc::error::Escaped;
use pipesvc::protocol::Encoding;
use pipesvc::Error;

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Call this method of the service (see `pipesvc methods`) with
    /// PARAMS_JSON, and print its result as JSON. Exit status: 0 on
    /// success, 1 when the service answers with an error (its code and
    /// message go to stderr), 2 when the call could not be made (no
    /// connection, a protocol error, bad PARAMS_JSON). The deadline sent
    /// with the call is --timeout.
    #[arg(long, value_name = "METHOD")]
    method: Option<String>,
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
        return bytes_call(&args.target, message)
            .await
            .map(|()| ExitCode::SUCCESS);
    };
    Ok(
        match typed_call(&args.target, method, args.message.as_deref()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{}", report(&err));
                ExitCode::from(exit_status(&err))
            }
        },
    )
}

async fn bytes_call(target: &ClientArgs, message: String) -> pipesvc::Result<()> {
    let client = target.connect().await?;
    let response = client.request(message).await?;
    client.close().await;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

async fn typed_call(
    target: &ClientArgs,
    method: &str,
    params: Option<&str>,
) -> pipesvc::Result<()> {
    // Checked here, so that a typo is not sent to the service.
    let params: serde_json::Value = serde_json::from_str(params.unwrap_or("null"))
        .map_err(|e| Error::config("PARAMS_JSON", format!("not JSON: {e}")))?;
    let client = target.connect().await?;
    let options = CallOptions::new().encoding(Encoding::Json);
    let params = serde_json::to_vec(&params).expect("a JSON value always serializes");
    let result = client
        .call_raw(method, Encoding::Json, &params, &options)
        .await;
    client.close().await;
    let result: serde_json::Value = serde_json::from_slice(&result?)
        .map_err(|e| Error::Protocol(format!("the result of {method:?} is not JSON: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    crate::methods::print_json(&mut stdout, &result)?;
    stdout.flush()?;
    Ok(())
}

/// 1 when the service answered the call with an ERROR (a code of its own,
/// or one such as `unknown method`, `bad request`, `timed out`); 2 when
/// the call did not get that far.
fn exit_status(err: &Error) -> u8 {
    match err {
        Error::Remote { .. } | Error::Server { .. } => SERVICE_ERROR,
        _ => CALL_FAILED,
    }
}

/// `error 12 (unknown method): no method "nope"` for a service error; the
/// whole chain of causes for anything else.
fn report(err: &Error) -> String {
    match err {
        Error::Remote { code, message } | Error::Server { code, message } => {
            format!("error {} ({}): {}", code.0, code.name(), Escaped(message))
        }
        other => pipesvc::ops::error_report(other),
    }
}
