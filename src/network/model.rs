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
/// [`SHIPPED`] with ONNX Runtime's graph optimisations for its CPU provider applied
/// (`models/train/espinnet_train/optimize.py`): the CPU sessions load it without optimising,
/// in half the time (0.03 against 0.07 s), and compute the same. Its fused operators are
/// the CPU provider's own, so the GPU providers load [`SHIPPED`].
pub(crate) const SHIPPED_CPU: &[u8] = include_bytes!("../../models/espinnet-light.cpu.onnx");
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

/// The model's `espinnet.size_multiple` (px), read from the file's bytes before any session
/// exists: a session planned for one tile shape needs it, and planning is what makes a
/// session for symbolic shapes slow to start. `None` where the bytes do not say (the
/// session's own check, [`inspect`], then reports why).
pub(crate) fn size_multiple(model: &[u8]) -> Option<usize> {
    metadata(model, "espinnet.size_multiple")?
        .parse()
        .ok()
        .filter(|&m| m > 0)
}

/// The model's metadata entry `key`, read from its bytes.
fn metadata<'m>(model: &'m [u8], key: &str) -> Option<&'m str> {
    // ONNX `ModelProto.metadata_props` (field 14) holds `StringStringEntryProto`s: key
    // (field 1) and value (field 2).
    fields(model)?
        .into_iter()
        .filter(|&(field, _)| field == 14)
        .find_map(|(_, entry)| {
            let (mut k, mut value) = (None, None);
            for (field, bytes) in fields(entry)? {
                match field {
                    1 => k = Some(bytes),
                    2 => value = Some(bytes),
                    _ => {}
                }
            }
            (k? == key.as_bytes()).then_some(value?)
        })
        .and_then(|value| std::str::from_utf8(value).ok())
}

/// The length-delimited fields `(number, bytes)` of one protobuf message, in order (fields
/// of other wire types are skipped); `None` if the message is malformed.
fn fields(message: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let tag = varint(&mut rest)?;
        match tag & 7 {
            0 => {
                varint(&mut rest)?;
            }
            1 => rest = rest.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut rest)?).ok()?;
                out.push((tag >> 3, rest.get(..len)?));
                rest = &rest[len..];
            }
            5 => rest = rest.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

/// A protobuf varint, advancing `bytes` past it.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_models_size_multiple_is_read_without_a_session() {
        assert_eq!(size_multiple(SHIPPED), Some(16));
        for model in ["espinnet-light-fr.onnx", "espinnet-light-stress.onnx"] {
            let bytes = std::fs::read(format!("{}/models/{model}", env!("CARGO_MANIFEST_DIR")));
            assert_eq!(size_multiple(&bytes.unwrap()), Some(16), "{model}");
        }
    }

    /// A model exported again without optimising it again fails here, not silently.
    #[test]
    fn the_cpu_optimisation_is_of_the_shipped_model() {
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(SHIPPED)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            metadata(SHIPPED_CPU, "espinnet.optimized_from"),
            Some(digest.as_str())
        );
        for key in [
            "espinnet.nnet",
            "espinnet.size_multiple",
            "espinnet.variant",
        ] {
            assert_eq!(metadata(SHIPPED_CPU, key), metadata(SHIPPED, key), "{key}");
        }
    }

    #[test]
    fn malformed_bytes_say_nothing() {
        assert_eq!(size_multiple(b""), None);
        assert_eq!(size_multiple(b"not a model at all"), None);
        assert_eq!(size_multiple(&SHIPPED[..SHIPPED.len() / 2]), None);
        // A varint that never ends.
        assert_eq!(size_multiple(&[0xff; 16]), None);
    }
}
