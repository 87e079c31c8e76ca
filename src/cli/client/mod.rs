//! The client subcommands: what a person at a terminal or a CI job does with a compressd
//! server (upload, run, follow, download), over its public HTTP API only, with retries,
//! resumable transfers and exit codes to branch on (docs/cli.md).

mod args;
mod connection;
mod download;
mod folder_tar;
mod follow;
mod jobs;
mod progress;
mod run;
mod upload;

use std::process::ExitCode;

pub use args::{DownloadArgs, JobsCommand, ReportArgs, RunArgs, Server, UploadArgs};
pub use connection::Failure;

/// A client subcommand.
#[derive(Debug)]
pub enum ClientCommand {
    Upload(UploadArgs),
    Run(RunArgs),
    Jobs(JobsCommand),
    Download(DownloadArgs),
    Report(ReportArgs),
}

impl ClientCommand {
    fn json(&self) -> bool {
        match self {
            ClientCommand::Upload(a) => a.server.json,
            ClientCommand::Run(a) => a.server.json,
            ClientCommand::Download(a) => a.server.json,
            ClientCommand::Report(a) => a.server.json,
            ClientCommand::Jobs(
                JobsCommand::List { server, .. }
                | JobsCommand::Show { server, .. }
                | JobsCommand::Watch { server, .. }
                | JobsCommand::Logs { server, .. }
                | JobsCommand::Cancel { server, .. }
                | JobsCommand::Delete { server, .. },
            ) => server.json,
        }
    }
}

/// Runs `command`; a failure is said on stderr (and as `{"error": …}` with --json) and becomes
/// the exit code.
pub async fn main(command: ClientCommand) -> ExitCode {
    let json = command.json();
    let outcome = match command {
        ClientCommand::Upload(args) => upload::upload(args).await,
        ClientCommand::Run(args) => run::run(args).await,
        ClientCommand::Jobs(command) => jobs::jobs(command).await,
        ClientCommand::Download(args) => download::download(args).await,
        ClientCommand::Report(args) => download::report(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": failure.to_string(), "exit_code": failure.exit_code() })
                );
            }
            ExitCode::from(failure.exit_code())
        }
    }
}
