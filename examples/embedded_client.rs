//! The client inside an existing Tokio application: several tasks share
//! one connection, and a background task follows the server's notifications.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run --example embedded_client     # in another
//! ```

use std::time::Duration;

use pipesvc::client::Notification;
use pipesvc::error::Escaped;
use pipesvc::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "pipesvc".into());
    let endpoint = name.parse()?;
    let client = Client::connect(&endpoint).await?;
    println!(
        "connected to {} at {endpoint}",
        Escaped(&client.server_name()),
    );

    // The app's own background work: print whatever the service pushes.
    let mut notifications = client.notifications().expect("taken once, here");
    let follower = tokio::spawn(async move {
        while let Some(note) = notifications.recv().await {
            match note {
                Notification::Message(note) => {
                    println!("notification: {}", String::from_utf8_lossy(&note))
                }
                Notification::Lagged(n) => println!("{n} notifications lost"),
                _ => {}
            }
        }
    });

    // Ten tasks of the app, each with its own clone of the one client;
    // their requests are multiplexed on the same connection.
    let workers: Vec<_> = (0..10)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move { client.request(format!("job {worker}")).await })
        })
        .collect();
    for worker in workers {
        let answer = worker.await??;
        println!("answer: {}", String::from_utf8_lossy(&answer));
    }

    println!("round trip: {:?}", client.ping().await?);
    client.close().await;
    // The notification stream ends once the connection is closed.
    tokio::time::timeout(Duration::from_secs(5), follower).await??;
    Ok(())
}
