use std::io::Read as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use certshift::cli::{inspect, manifests::Manifests, plan};

/// Staged, Service Fabric-style certificate declarations for Kubernetes.
#[derive(Parser)]
#[command(name = "certshift", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (in cluster, or with --kubeconfig).
    Run(RunArgs),
    /// Show a declaration: what is in force, its upgrade, members, store and events.
    Status {
        /// The ClusterCertificateDeclaration.
        name: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
    },
    /// Print the CustomResourceDefinitions (the source of crds/).
    Crds,
    /// Print the revisions the operator would publish for a declaration.
    ///
    /// Input: one ClusterCertificateDeclaration (spec = desired, optional
    /// status.effective = in force), the ObservedCertificates its store names
    /// and the Secrets they reference. Exit 0: planned; 3: blocked; 1: invalid input.
    Plan {
        /// Manifest files or directories (multi-document YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// The time to plan at (RFC 3339); default now.
        #[arg(long)]
        now: Option<Timestamp>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "json")]
        output: Format,
    },
    /// Print the facts of the certificates in a PEM/DER file or Secret manifest.
    Inspect {
        /// A file, or `-` for standard input.
        file: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A kubeconfig file; default: in-cluster config, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Elect a leader on a Lease before writing anything.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: --namespace, else POD_NAMESPACE, else "default").
    #[arg(long)]
    leader_election_namespace: Option<String>,
    #[arg(long, default_value = "certshift-leader")]
    leader_election_lease: String,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|err| format!("{}: {err}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|err| format!("{}: {err}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|err| err.to_string())?,
    };
    kube::Client::try_from(config).map_err(|err| err.to_string())
}

fn run_operator(args: RunArgs) -> Result<i32, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|err| err.to_string())?;
    runtime.block_on(async move {
        let client = client(args.kubeconfig.as_deref()).await?;
        let leader_election = args.leader_elect.then(|| certshift::controller::LeaderElection {
            namespace: args
                .leader_election_namespace
                .clone()
                .or_else(|| args.namespace.clone())
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".to_owned()),
            name: args.leader_election_lease.clone(),
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| format!("certshift-{}", std::process::id())),
            lease_duration: std::time::Duration::from_secs(15),
        });
        let options = certshift::controller::Options {
            namespace: args.namespace.clone(),
            leader_election,
            metrics_addr: Some(args.metrics_addr),
        };
        certshift::controller::run(client, options, shutdown_signal()).await?;
        Ok(0)
    })
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

fn read(file: &str) -> Result<Vec<u8>, String> {
    if file == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|err| format!("standard input: {err}"))?;
        return Ok(bytes);
    }
    std::fs::read(file).map_err(|err| format!("{file}: {err}"))
}

/// A directory stands for its `.yaml`, `.yml` and `.json` files, in name order
/// (as `kubectl apply -f DIR` reads it).
fn expand(path: &str) -> Vec<Result<String, String>> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return vec![Ok(path.to_owned())];
    };
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    if files.is_empty() {
        return vec![Err(format!("{path}: no .yaml, .yml or .json files"))];
    }
    files.into_iter().map(Ok).collect()
}

fn run(cli: Cli) -> Result<i32, String> {
    match cli.command {
        Command::Run(args) => run_operator(args),
        Command::Status {
            name,
            namespace,
            kubeconfig,
        } => {
            let runtime = tokio::runtime::Runtime::new().map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let client = client(kubeconfig.as_deref()).await?;
                let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
                let report = certshift::cli::status::gather(&client, &namespace, &name).await?;
                print!("{}", certshift::cli::status::render(&report, Timestamp::now()));
                Ok(0)
            })
        }
        Command::Crds => {
            print!("{}", certshift::crd::yaml());
            Ok(0)
        }
        Command::Plan { files, now, output } => {
            let mut manifests = Manifests::default();
            for file in files.iter().flat_map(|f| expand(f)).collect::<Result<Vec<_>, _>>()? {
                let file = &file;
                let bytes = read(file)?;
                let text = String::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))?;
                manifests.read(file, &text)?;
            }
            let report = plan::plan(&manifests, now.unwrap_or_else(Timestamp::now))?;
            match output {
                Format::Json => print!("{}", plan::render_json(&report)),
                Format::Text => print!("{}", plan::render_text(&report)),
            }
            Ok(report.exit_code())
        }
        Command::Inspect { file, output } => {
            let bytes = read(&file)?;
            let all = inspect::inspect(&file, &bytes)?;
            match output {
                Format::Json => print!("{}", inspect::render_json(&all)),
                Format::Text => print!("{}", inspect::render_text(&all)),
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
