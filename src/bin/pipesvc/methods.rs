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
/// method: its name and the first line of its doc, each escaped and cut
/// (a name at [`NAME_SHOWN`] bytes, a doc at [`DOC_SHOWN`]).
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
    let methods = match description.get("methods") {
        Some(Value::Array(methods)) => methods.as_slice(),
        _ => &[],
    };
    if methods.is_empty() {
        return out.line("no typed methods");
    }
    // Names are cut before they are measured: the column is at most as
    // wide as one cut name.
    let name = |method: &Value| field(text(method, "name"), NAME_SHOWN);
    let width = methods
        .iter()
        .map(|m| name(m).chars().count())
        .max()
        .unwrap_or(0);
    for method in methods {
        let name = name(method);
        let pad = " ".repeat(width - name.chars().count());
        let doc = text(method, "doc").lines().next().unwrap_or("");
        out.line(&format!("  {name}{pad}  {}", field(doc, DOC_SHOWN)))?;
    }
    Ok(())
}

/// The string at `key`, or nothing.
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}
