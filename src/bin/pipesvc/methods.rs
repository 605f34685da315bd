//! `pipesvc methods`: what a running service offers (DESCRIBE).

use std::io::{IsTerminal, Write};

use clap::Args;
use pipesvc::error::Escaped;
use serde_json::Value;

use crate::ClientArgs;

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
    let client = args.target.connect().await?;
    let description = client.describe_raw().await;
    client.close().await;
    let description: Value = serde_json::from_slice(&description?).map_err(|e| {
        pipesvc::Error::Protocol(format!("the service's description is not JSON: {e}"))
    })?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        print_json(&mut stdout, &description)?;
    } else {
        print_human(&mut stdout, &description)?;
    }
    stdout.flush()?;
    Ok(())
}

/// JSON for a person on a terminal (indented), one line for a pipe.
pub fn print_json(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    let text = match std::io::stdout().is_terminal() {
        true => serde_json::to_string_pretty(value),
        false => serde_json::to_string(value),
    };
    writeln!(out, "{}", text.expect("a JSON value always serializes"))
}

/// `SERVICE VERSION (protocol 2; json, msgpack)`, then one line per
/// method: its name and the first line of its doc. Text from the server
/// is escaped: a hostile one cannot drive the terminal.
fn print_human(out: &mut impl Write, description: &Value) -> std::io::Result<()> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let encodings: Vec<String> = match description.get("encodings") {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    writeln!(
        out,
        "{} {} (protocol {}; encodings: {})",
        Escaped(&text(description, "service")),
        Escaped(&text(description, "version")),
        description
            .get("protocol")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        Escaped(&encodings.join(", ")),
    )?;
    let methods = match description.get("methods") {
        Some(Value::Array(methods)) => methods.as_slice(),
        _ => &[],
    };
    if methods.is_empty() {
        return writeln!(out, "no typed methods");
    }
    let width = methods
        .iter()
        .map(|m| text(m, "name").len())
        .max()
        .unwrap_or(0);
    for method in methods {
        let doc = text(method, "doc");
        let first_line = doc.lines().next().unwrap_or("");
        let name = text(method, "name");
        writeln!(
            out,
            "  {:<width$}  {}",
            Escaped(&name).to_string(),
            Escaped(first_line)
        )?;
    }
    Ok(())
}
