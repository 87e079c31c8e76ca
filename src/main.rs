use clap::Parser;
use compressd::config::{Cli, Command};
use compressd::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Openapi) => {
            print!("{}", compressd::api::openapi().to_yaml()?);
            Ok(())
        }
        Some(Command::Serve) | None => {
            compressd::telemetry::init_logging(&cli.config.log_format);
            let app = Application::build(cli.config).await?;
            app.run_until_stopped().await
        }
    }
}
