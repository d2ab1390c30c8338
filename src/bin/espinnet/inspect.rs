//! `espinnet inspect`: reads a reference/sample pair the way `reconstruct` does, checks it,
//! and prints what it found: the quick answer to "is my data usable?".

use std::path::PathBuf;

use espinnet::Result;
use ndarray::{Array3, Axis};

/// The input pair and its optional corrections, shared by `inspect` and `reconstruct`.
#[derive(clap::Args)]
pub struct Inputs {
    /// Reference stack (TIFF, .npy, or file.h5:/dataset).
    #[arg(long, required_unless_present = "case", default_value = "")]
    pub reference: String,
    /// Sample stack, same N, H, W.
    #[arg(long, required_unless_present = "case", default_value = "")]
    pub sample: String,
    /// A case written by `espinnet simulate`: its reference, sample and geometry.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["reference", "sample"])]
    pub case: Option<PathBuf>,
    /// Dark frame [H, W] to subtract from both stacks.
    #[arg(long)]
    pub dark: Option<String>,
    /// Flat frame [H, W] to divide both stacks by (after dark subtraction).
    #[arg(long)]
    pub flat: Option<String>,
}

impl Inputs {
    /// Takes the stacks from `--case DIR` and returns its `meta.json`.
    pub fn apply_case(&mut self) -> Result<Option<serde_json::Value>> {
        let Some(dir) = &self.case else {
            return Ok(None);
        };
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        self.reference = file("reference.tif");
        self.sample = file("sample.tif");
        let meta = dir.join("meta.json");
        let text = std::fs::read(&meta).map_err(|source| espinnet::Error::Io {
            path: meta.clone(),
            source,
        })?;
        let value = serde_json::from_slice(&text).map_err(|e| espinnet::Error::Format {
            message: format!("not a case's meta.json: {e}"),
            path: meta,
        })?;
        Ok(Some(value))
    }

    /// Reads, validates and corrects both stacks.
    pub fn read(&self) -> Result<(Array3<f32>, Array3<f32>)> {
        espinnet::io::read_pair(
            &self.reference,
            &self.sample,
            self.dark.as_deref(),
            self.flat.as_deref(),
        )
    }

    /// The files these inputs are read from.
    pub fn paths(&self) -> Vec<PathBuf> {
        [
            Some(&self.reference),
            Some(&self.sample),
            self.dark.as_ref(),
            self.flat.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|s| espinnet::io::Location::parse(s).ok())
        .map(|l| l.path)
        .collect()
    }
}

pub fn run(inputs: &Inputs) -> Result<()> {
    let (reference, sample) = inputs.read()?;
    let (n, h, w) = reference.dim();
    println!("{n} scan(s) of {h}x{w} pixels");
    for (name, s) in [("reference", &reference), ("sample", &sample)] {
        let (mean, visibility) = stats(s);
        println!(
            "  {name:<9} mean {mean:>10.4}  pattern visibility (std/mean per frame) {visibility:.3}"
        );
    }
    Ok(())
}

/// Mean of the stack and mean over frames of std/mean.
fn stats(s: &Array3<f32>) -> (f64, f64) {
    let per_frame: Vec<(f64, f64)> = s
        .axis_iter(Axis(0))
        .map(|f| {
            let m = f.iter().map(|&v| v as f64).sum::<f64>() / f.len() as f64;
            let var = f.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / f.len() as f64;
            (m, var.sqrt() / m.abs().max(f64::MIN_POSITIVE))
        })
        .collect();
    let k = per_frame.len() as f64;
    (
        per_frame.iter().map(|p| p.0).sum::<f64>() / k,
        per_frame.iter().map(|p| p.1).sum::<f64>() / k,
    )
}
