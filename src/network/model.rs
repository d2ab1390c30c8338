//! Loading the ONNX model and checking it against the runtime's contract.
//!
//! The contract (written by `models/train/espinnet_train/export.py`): inputs `reference` and
//! `sample` `[B, Nnet, H, W]` float32, outputs `displacement` `[B, 2, H, W]`, `transmission`
//! and `darkfield` `[B, 1, H, W]`, and metadata `espinnet.nnet`, `espinnet.size_multiple`,
//! `espinnet.normalisation`. A model that breaks it is an [`Error::Model`] at load, not a
//! wrong result later.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serde::Serialize;

use crate::error::{Error, Result};

/// The model shipped with the library (see `models/MODEL_CARD.md`), used when no path is
/// given.
pub(crate) const SHIPPED: &[u8] = include_bytes!("../../models/espinnet-light.onnx");
/// How the shipped model is named in messages and summaries.
pub const SHIPPED_NAME: &str = "espinnet-light.onnx (shipped)";

const INPUTS: [&str; 2] = ["reference", "sample"];
const OUTPUTS: [(&str, i64); 3] = [("displacement", 2), ("transmission", 1), ("darkfield", 1)];
const NORMALISATION: &str = "mean_of_reference_stack";

/// What the model says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The file, or [`SHIPPED_NAME`].
    pub source: PathBuf,
    /// Scan count the network takes (its input channels).
    pub nnet: usize,
    /// Height and width must be multiples of this (px).
    pub size_multiple: usize,
    pub variant: String,
    pub training_step: Option<u64>,
    pub recipe_commit: Option<String>,
}

/// Checks the session's inputs, outputs and metadata.
pub(crate) fn inspect(session: &Session, source: &Path) -> Result<ModelInfo> {
    let bad = |m: String| Error::model(source, m);
    let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
    let custom = |key: &str| meta.custom(key);
    let number = |key: &str| -> Result<usize> {
        let v = custom(key)
            .ok_or_else(|| bad(format!("metadata `{key}` missing: not an espinnet export")))?;
        v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            bad(format!(
                "metadata `{key}` = '{v}' is not a positive integer"
            ))
        })
    };
    let nnet = number("espinnet.nnet")?;
    let size_multiple = number("espinnet.size_multiple")?;
    match custom("espinnet.normalisation") {
        Some(n) if n == NORMALISATION => {}
        other => {
            return Err(bad(format!(
                "normalisation {other:?} is not the runtime's '{NORMALISATION}'"
            )));
        }
    }

    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_string())
            .collect::<Vec<_>>()
    };
    if names(session.inputs()) != INPUTS {
        return Err(bad(format!(
            "inputs {:?}, expected {INPUTS:?}",
            names(session.inputs())
        )));
    }
    let want: Vec<&str> = OUTPUTS.iter().map(|(n, _)| *n).collect();
    if names(session.outputs()) != want {
        return Err(bad(format!(
            "outputs {:?}, expected {want:?}",
            names(session.outputs())
        )));
    }
    let check = |outlet: &ort::value::Outlet, channels: i64| -> Result<()> {
        match outlet.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 4 && (shape[1] == channels || shape[1] < 0) => Ok(()),
            other => Err(bad(format!(
                "`{}` is {other:?}, expected float32 [B, {channels}, H, W]",
                outlet.name()
            ))),
        }
    };
    for input in session.inputs() {
        check(input, nnet as i64)?;
    }
    for (output, (_, channels)) in session.outputs().iter().zip(OUTPUTS) {
        check(output, channels)?;
    }
    Ok(ModelInfo {
        source: source.to_path_buf(),
        nnet,
        size_multiple,
        variant: custom("espinnet.variant").unwrap_or_default(),
        training_step: custom("espinnet.training_step").and_then(|s| s.parse().ok()),
        recipe_commit: custom("espinnet.recipe_commit"),
    })
}
