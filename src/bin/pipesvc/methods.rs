//! `pipesvc methods`: what a running service offers (DESCRIBE).

use clap::Args;
use serde_json::Value;

use crate::output::{field, Out, DOC_SHOWN, NAME_SHOWN};
use crate::session::ClientArgs;

#[derive(Args, Debug)]
pub struct MethodsArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Print the service's whole description as JSON (PROTOCOL.md,
    /// "DESCRIBE"): name, version, encodings, and each method with its doc
    /// and the JSON Schemas of its params and result.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: MethodsArgs) -> pipesvc::Result<()> {
    let session = args.target.connect().await?;
    let describe = session.client().describe_raw();
    let description = session
        .step("waiting for the answer to DESCRIBE", describe)
        .await;
    session.close().await;
    let description: Value = serde_json::from_slice(&description?).map_err(|e| {
        pipesvc::Error::Protocol(format!("the service's description is not JSON: {e}"))
    })?;
    let mut out = Out::stdout();
    match args.json {
        true => out.json(&description)?,
        false => print_human(&mut out, &description)?,
    }
    out.finish()
}

/// `SERVICE VERSION (protocol 2; json, msgpack)`, then one line per
/// method: its name, whether it streams, and the first line of its doc,
/// each escaped and cut (a name at [`NAME_SHOWN`] bytes, a doc at
/// [`DOC_SHOWN`]); then, after `topics:`, one line per topic with its
/// policy and queue.
fn print_human(out: &mut Out, description: &Value) -> pipesvc::Result<()> {
    let encodings: Vec<&str> = match description.get("encodings") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    out.line(&format!(
        "{} {} (protocol {}; encodings: {})",
        field(text(description, "service"), NAME_SHOWN),
        field(text(description, "version"), NAME_SHOWN),
        description
            .get("protocol")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        field(&encodings.join(", "), NAME_SHOWN),
    ))?;
    let methods = list(description, "methods");
    let topics = list(description, "topics");
    if methods.is_empty() && topics.is_empty() {
        return out.line("no typed methods");
    }
    print_entries(out, methods, stream_marker)?;
    if !topics.is_empty() {
        out.line("topics:")?;
        print_entries(out, topics, topic_marker)?;
    }
    Ok(())
}

/// The array at `key` (revision 2.2 added `topics`; older services have
/// none).
fn list<'a>(description: &'a Value, key: &str) -> &'a [Value] {
    match description.get(key) {
        Some(Value::Array(entries)) => entries.as_slice(),
        _ => &[],
    }
}

/// One line per entry: its name, a marker (`[server stream]`, a topic's
/// policy) and the first line of its doc.
fn print_entries(
    out: &mut Out,
    entries: &[Value],
    marker: fn(&Value) -> Option<String>,
) -> pipesvc::Result<()> {
    // Names are cut before they are measured: the column is at most as
    // wide as one cut name.
    let name = |entry: &Value| field(text(entry, "name"), NAME_SHOWN);
    let width = entries
        .iter()
        .map(|e| name(e).chars().count())
        .max()
        .unwrap_or(0);
    for entry in entries {
        let name = name(entry);
        let pad = " ".repeat(width - name.chars().count());
        let doc = text(entry, "doc").lines().next().unwrap_or("");
        let doc = match marker(entry) {
            Some(marker) => format!("{} {}", field(&marker, NAME_SHOWN), field(doc, DOC_SHOWN)),
            None => field(doc, DOC_SHOWN),
        };
        out.line(&format!("  {name}{pad}  {doc}"))?;
    }
    Ok(())
}

/// `[server stream]`, `[client stream]` or `[both ways stream]` for a
/// streaming method (PROTOCOL.md, DESCRIBE: `"streams"`).
fn stream_marker(method: &Value) -> Option<String> {
    match text(method, "streams") {
        "" => None,
        "both" => Some("[both ways stream]".into()),
        way => Some(format!("[{way} stream]")),
    }
}

/// A topic's slow-subscriber policy and queue: `[drop_oldest, queue 256]`.
fn topic_marker(topic: &Value) -> Option<String> {
    let queue = topic.get("queue").and_then(Value::as_u64).unwrap_or(0);
    Some(format!("[{}, queue {queue}]", text(topic, "policy")))
}

/// The string at `key`, or nothing.
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}
