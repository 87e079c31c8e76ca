use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use compressd::cli::client::ClientCommand;
use compressd::config::{Cli, Command};
use compressd::startup::{Application, ShutdownSignal};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let mut cli = Cli::parse();
    // A job process runs the math alone: no async runtime, no database, no listener.
    if let Some(Command::RunJob { spec }) = &cli.command {
        return Ok(compressd::worker::job_process::main(spec));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(client) = client_command(&mut cli) {
        return Ok(runtime.block_on(compressd::cli::client::main(client)));
    }
    runtime
        .block_on(serve_or_manage(cli))
        .map(|()| std::process::ExitCode::SUCCESS)
}

/// Takes the client subcommand out of `cli`, if it holds one.
fn client_command(cli: &mut Cli) -> Option<ClientCommand> {
    let command = match cli.command.take() {
        Some(Command::Upload(a)) => ClientCommand::Upload(a),
        Some(Command::Run(a)) => ClientCommand::Run(a),
        Some(Command::Jobs(c)) => ClientCommand::Jobs(c),
        Some(Command::Download(a)) => ClientCommand::Download(a),
        Some(Command::Report(a)) => ClientCommand::Report(a),
        other => {
            cli.command = other;
            return None;
        }
    };
    Some(command)
}

async fn serve_or_manage(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Openapi) => {
            print!("{}", compressd::api::openapi().to_yaml()?);
            Ok(())
        }
        Some(Command::Healthcheck) => healthcheck(&cli.config.bind),
        Some(Command::Keys(c)) => compressd::cli::keys(&cli.config.database_url, c).await,
        Some(Command::Tenants(c)) => compressd::cli::tenants(&cli.config.database_url, c).await,
        Some(
            Command::RunJob { .. }
            | Command::Upload(_)
            | Command::Run(_)
            | Command::Jobs(_)
            | Command::Download(_)
            | Command::Report(_),
        ) => unreachable!("handled before the runtime starts"),
        Some(Command::Serve) | None => {
            let signal = ShutdownSignal::install();
            let traces = compressd::telemetry::init_logging(&cli.config.log_format);
            let app = Application::build(cli.config).await?;
            let stopped = app.run_until_stopped(signal).await;
            // The exporter's last batch goes out on a thread of its own, off the runtime.
            tokio::task::spawn_blocking(move || drop(traces)).await?;
            stopped
        }
    }
}

fn healthcheck(bind: &str) -> anyhow::Result<()> {
    // A wildcard bind address is reachable on loopback.
    let target = bind
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let mut stream = TcpStream::connect(&target)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    anyhow::ensure!(
        &head[9..12] == b"200",
        "not ready: {}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}
