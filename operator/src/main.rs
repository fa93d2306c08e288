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
