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
    /// Roll back the change a declaration is making (failureAction Manual, or
    /// at any time during a change): sets certshift.io/action=rollback/<generation>.
    Rollback {
        /// The ClusterCertificateDeclaration.
        name: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
    },
    /// Go on past a failed health check held by failureAction Manual: sets
    /// certshift.io/action=resume/<revision>.
    Resume {
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
    /// The member side: load each revision from the mounted outputs, proxy or
    /// reload, and acknowledge it on this Pod (a sidecar; docs/agent.md).
    Agent(Box<AgentArgs>),
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

#[derive(clap::Args)]
struct AgentArgs {
    /// One `projected` volume holding the presentation Secret and the
    /// validation ConfigMap (recommended: the kubelet writes both at once).
    #[arg(long, conflicts_with_all = ["presentation", "validation"], required_unless_present = "presentation")]
    dir: Option<std::path::PathBuf>,
    /// The presentation Secret's volume (with --validation).
    #[arg(long, requires = "validation")]
    presentation: Option<std::path::PathBuf>,
    /// The validation ConfigMap's volume (with --presentation).
    #[arg(long, requires = "presentation")]
    validation: Option<std::path::PathBuf>,
    /// `LISTEN=UPSTREAM`: terminate mutual TLS on LISTEN, admit peers by the
    /// revision's rules, forward to UPSTREAM (the application, on loopback).
    #[arg(long, value_name = "LISTEN=UPSTREAM")]
    inbound: Vec<String>,
    /// `LISTEN=REMOTE`: accept plaintext on LISTEN (loopback), dial REMOTE with
    /// mutual TLS, verify it by the revision's rules.
    #[arg(long, value_name = "LISTEN=REMOTE")]
    outbound: Vec<String>,
    /// Run this command (`sh -c`) after a revision is on disk; a non-zero exit
    /// is a failed reload, and the revision is not acknowledged.
    #[arg(long)]
    reload_exec: Vec<String>,
    /// Send this signal (`HUP`, `USR1`…) to --reload-process after a revision is on disk.
    #[arg(long, requires = "reload_process")]
    reload_signal: Option<String>,
    /// The process name (as in /proc/PID/comm) --reload-signal goes to.
    #[arg(long, requires = "reload_signal")]
    reload_process: Option<String>,
    /// The Pod to acknowledge on (default: $POD_NAME, from the downward API).
    #[arg(long)]
    pod: Option<String>,
    /// Its namespace (default: $POD_NAMESPACE).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Do not acknowledge (the member is judged some other way).
    #[arg(long)]
    no_ack: bool,
    /// The kubeconfig for acknowledgements (default: in-cluster, then
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_addr: std::net::SocketAddr,
    /// How long a handshake refused because of a certificate counts against
    /// the member's health (the condition certshift.io/Healthy), and how far
    /// back a new revision's baseline looks (Go duration).
    #[arg(long, default_value = "60s")]
    health_window: String,
    /// How long an established connection whose peer a newly loaded
    /// revision refuses (revoked, its CA dropped, its thumbprint dropped) is
    /// left to finish before the agent closes it (Go duration).
    #[arg(long, default_value = "5s")]
    connection_drain: String,
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

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal, not in files and collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_agent(args: AgentArgs) -> Result<i32, String> {
    use certshift::agent::{Inbound, Options, Outbound, PodRef, RELOAD_SIGNALS, Reload, Volumes};
    init_logs(args.log_format);
    let pair = |flag: &str, value: &str| -> Result<(std::net::SocketAddr, String), String> {
        let (listen, to) = value
            .split_once('=')
            .ok_or_else(|| format!("--{flag} {value:?}: expected LISTEN=ADDRESS"))?;
        let listen = listen
            .parse()
            .map_err(|err| format!("--{flag} {value:?}: LISTEN {listen:?}: {err}"))?;
        match to.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("--{flag} {value:?}: {to:?} is not HOST:PORT")),
        }
        Ok((listen, to.to_owned()))
    };
    let volumes = match (args.dir, args.presentation, args.validation) {
        (Some(dir), _, _) => Volumes::Projected(dir),
        (None, Some(presentation), Some(validation)) => Volumes::Separate {
            presentation,
            validation,
        },
        _ => return Err("give --dir, or --presentation and --validation".to_owned()),
    };
    // A command needs a shell in the agent's image; the certshift image has
    // none (signals need nothing).
    let has_shell = || {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|dir| dir.join("sh").is_file())
    };
    if !args.reload_exec.is_empty() && !has_shell() {
        return Err(
            "--reload-exec runs its command with sh, and this image has no sh on PATH: \
                    use --reload-signal with --reload-process, or an agent image with a shell"
                .to_owned(),
        );
    }
    let mut reload: Vec<Reload> = args.reload_exec.into_iter().map(Reload::Exec).collect();
    if let (Some(signal), Some(process)) = (args.reload_signal, args.reload_process) {
        let name = signal.trim_start_matches("SIG").to_ascii_uppercase();
        if !RELOAD_SIGNALS.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = RELOAD_SIGNALS.iter().map(|(n, _)| *n).collect();
            return Err(format!("--reload-signal {signal:?}: not one of {}", names.join(", ")));
        }
        reload.push(Reload::Signal { signal: name, process });
    }
    let pod = if args.no_ack {
        None
    } else {
        let name = args.pod.or_else(|| std::env::var("POD_NAME").ok());
        let namespace = args.namespace.or_else(|| std::env::var("POD_NAMESPACE").ok());
        match (name, namespace) {
            (Some(name), Some(namespace)) => Some(PodRef { namespace, name }),
            _ => {
                return Err(
                    "the Pod to acknowledge on: set POD_NAME and POD_NAMESPACE (downward API), or --pod and --namespace, or --no-ack"
                        .to_owned(),
                );
            }
        }
    };
    let options = Options {
        volumes,
        inbound: args
            .inbound
            .iter()
            .map(|v| pair("inbound", v).map(|(listen, upstream)| Inbound { listen, upstream }))
            .collect::<Result<_, _>>()?,
        outbound: args
            .outbound
            .iter()
            .map(|v| pair("outbound", v).map(|(listen, remote)| Outbound { listen, remote }))
            .collect::<Result<_, _>>()?,
        reload,
        pod,
        metrics_addr: Some(args.metrics_addr),
        health_window: certshift::duration::parse("--health-window", &args.health_window)
            .ok()
            .filter(|w| !w.is_zero())
            .ok_or_else(|| {
                format!(
                    "--health-window {:?}: not a positive duration (e.g. 60s)",
                    args.health_window
                )
            })?,
        connection_drain: certshift::duration::parse("--connection-drain", &args.connection_drain)?,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|err| err.to_string())?;
    runtime.block_on(async move {
        let client = match &options.pod {
            Some(_) => Some(client(args.kubeconfig.as_deref()).await?),
            None => None,
        };
        certshift::agent::run(options, client, shutdown_signal()).await?;
        Ok(0)
    })
}

fn run_operator(args: RunArgs) -> Result<i32, String> {
    init_logs(args.log_format);
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
        Command::Agent(args) => run_agent(*args),
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
        Command::Rollback {
            name,
            namespace,
            kubeconfig,
        } => act(certshift::cli::action::Verb::Rollback, &name, namespace, kubeconfig),
        Command::Resume {
            name,
            namespace,
            kubeconfig,
        } => act(certshift::cli::action::Verb::Resume, &name, namespace, kubeconfig),
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
            let now = now.unwrap_or_else(Timestamp::now);
            // CRLs from distribution points are fetched as the operator fetches them.
            let fetcher = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            let report = match plan::gather(&manifests, now)? {
                plan::Gathered::Blocked(report) => report,
                plan::Gathered::Inputs(declaration, inputs) => plan::plan_inputs(declaration, &inputs, now, |points| {
                    let cache = certshift::controller::crl_fetch::CrlCache::default();
                    fetcher.block_on(cache.fetch_due(points, std::time::Duration::ZERO))
                }),
            };
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

/// `certshift rollback|resume NAME`: sets the annotation, says what it set.
fn act(
    verb: certshift::cli::action::Verb,
    name: &str,
    namespace: Option<String>,
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<i32, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|err| err.to_string())?;
    runtime.block_on(async {
        let client = client(kubeconfig.as_deref()).await?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        let set = certshift::cli::action::request(&client, &namespace, name, verb).await?;
        println!("{namespace}/{name}: {set}");
        Ok(0)
    })
}
