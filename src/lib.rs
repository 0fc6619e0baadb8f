//! synthcti: a declarative experiment runner for ATT&CK technique classification of CTI
//! sentences, with and without synthetic data.
//!
//! A manifest ([`manifest`]) expands into grid cells; each cell is a chain of stages — load
//! ([`data`]), split ([`split`]), and on augmented cells cluster ([`cluster`]), prompt
//! ([`prompt`]), generate ([`generate`], [`llm`]) and filter ([`filter`]); then train ([`ml`], the only module on burn)
//! and evaluate ([`metrics`]) — run through a content-addressed cache ([`cache`]) by the
//! [`pipeline`], and summarised by [`report`].

pub mod aggregate;
pub mod arms;
pub mod cache;
pub mod cache_admin;
pub mod calibrate;
pub mod cluster;
pub mod compare;
pub mod data;
pub mod error;
pub mod executor;
pub mod export;
pub mod external;
pub mod features;
pub mod filter;
pub mod generate;
pub mod grid;
pub mod hash;
pub mod hub;
pub mod junk;
pub mod leakage;
pub mod llm;
pub mod manifest;
pub mod metrics;
pub mod ml;
pub mod multilabel;
pub mod navigator;
pub mod out_lock;
pub mod output;
pub mod paths;
pub mod per_class;
pub mod pipeline;
pub mod plots;
pub mod png;
pub mod predict;
pub mod progress;
pub mod prompt;
pub mod record;
pub mod report;
pub mod results_section;
pub mod runs;
pub mod segment;
pub mod similarity;
pub mod slurm;
pub mod split;
pub mod stats;
pub mod study;
pub mod synth_export;
pub mod timings;

pub use error::{Error, ErrorKind, Result};
