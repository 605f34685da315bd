//! `pipesvc watch TOPIC`: a topic's events (revision 2.2), one JSON line
//! each, until interrupted, the topic closes, or `--count` events came.
//!
//! The client reconnects: across a service restart the subscription is
//! made again by itself. What is not an event goes to stderr, as a clear
//! line: events dropped because the watcher fell behind (`lagged`), and a
//! subscription made again (`resubscribed`: events may have been missed).
//! When stdout is closed (`| head -3`) the subscription is cancelled and
//! the command exits at once (on Windows: at the next item), with status 0.

use std::process::ExitCode;

use clap::Args;
use pipesvc::rpc::TopicEvent;
use serde_json::Value;

use crate::call::{exit_status, report};
use crate::output::{self, Out};
use crate::session::ClientArgs;

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Stop after this many events (lagged and resubscribed lines do not
    /// count).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// The topic to watch (see `pipesvc methods`).
    #[arg(value_name = "TOPIC")]
    topic: String,
}

/// Runs the command: exit status as for `call --method` (1 when the
/// service ends the subscription with an error, 2 when it could not be
/// made).
pub async fn run(args: WatchArgs) -> pipesvc::Result<ExitCode> {
    Ok(match watch(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&report(&err));
            ExitCode::from(exit_status(&err))
        }
    })
}

async fn watch(args: &WatchArgs) -> pipesvc::Result<()> {
    let session = args.target.connect_reconnecting().await?;
    let subscribing = session.client().subscribe_to::<Value>(&args.topic);
    let mut events = session
        .step("waiting to subscribe to the topic", subscribing)
        .await?;
    let mut out = Out::stdout();
    let mut seen = 0u64;
    let closed = output::stdout_closed();
    tokio::pin!(closed);
    let outcome = loop {
        if args.count.is_some_and(|count| seen >= count) {
            break Ok(());
        }
        let next = tokio::select! {
            next = events.next() => next,
            () = &mut closed => break Ok(()),
        };
        let event = match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(event)) => event,
        };
        match event {
            TopicEvent::Event(value) => match out.item(&value) {
                Ok(()) => seen += 1,
                Err(e) if output::is_closed_stdout(&e) => break Ok(()),
                Err(e) => break Err(e),
            },
            TopicEvent::Lagged(lost) => output::error(&format!(
                "lagged: {lost} events dropped (this watcher fell behind)"
            )),
            TopicEvent::Resubscribed => output::error(
                "resubscribed: the connection was lost and the subscription made again; \
                 events may have been missed",
            ),
            _ => {}
        }
    };
    // Unsubscribes (CANCEL), then closes within --timeout of now.
    drop(events);
    session.close_soon().await;
    outcome
}
