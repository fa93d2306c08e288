//! The offline subcommands (`plan`, `inspect`): file handling and rendering
//! around the pure core.

pub mod action;
pub mod inspect;
pub mod manifests;
pub mod plan;
pub mod status;
