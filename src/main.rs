//! The `ringcast` binary: `serve`, `publish`, `bench`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use ringcast::config::{Cli, Command, PublishArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ringcast::log::init_from_env();
    let cli = Cli::from_env();
    match cli.command {
        Command::Serve(cfg) => match ringcast::runtime::server::run(cfg.settings()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringcast: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match ringcast::bench::main(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringcast bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Publish(args) => match publish(&args) {
            Ok(id) => {
                println!("{id}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringcast publish: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Sends one command over the publish socket and returns the id it got.
fn publish(args: &PublishArgs) -> Result<String, String> {
    let raw = match &args.data {
        Some(d) => d.clone().into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading stdin: {e}"))?;
            buf
        }
    };
    let mut json = ringcast::proto::json::JsonScratch::new();
    let data = ringcast::proto::publish::payload_to_json(&mut json, &raw, usize::MAX)
        .map_err(|e| e.to_string())?;
    let mut line = Vec::with_capacity(data.len() + 64);
    ringcast::proto::publish::write_command_line(
        &mut line,
        &args.topic,
        args.event.as_deref(),
        &data,
    );

    let mut sock = UnixStream::connect(&args.socket).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `ringcast serve` running?)",
            args.socket.display()
        )
    })?;
    sock.write_all(&line).map_err(|e| format!("sending: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&sock)
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let mut bytes = answer.trim_end().as_bytes().to_vec();
    let value = simd_json::to_borrowed_value(&mut bytes)
        .map_err(|_| format!("unexpected answer: {answer}"))?;
    use simd_json::prelude::*;
    if value.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        value
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("unexpected answer: {answer}"))
    } else {
        Err(value
            .get("error")
            .and_then(|v| v.as_str())
            .map_or_else(|| format!("unexpected answer: {answer}"), str::to_owned))
    }
}
