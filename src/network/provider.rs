//! Execution providers: CPU, CUDA and TensorRT, chosen at run time.
//!
//! An explicitly requested GPU provider that cannot be registered is an error, never a
//! silent CPU run; `Auto` tries TensorRT, then CUDA, then CPU, and reports what it got.

use std::path::PathBuf;

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::SessionBuilder;
use serde::Serialize;

use crate::error::{Error, Result};

/// Which execution provider runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The best available: TensorRT, then CUDA, then CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl Provider {
    /// CUDA or TensorRT: tensors in device memory, where tiles can be larger.
    pub fn is_gpu(self) -> bool {
        matches!(self, Provider::Cuda | Provider::TensorRt)
    }
}

impl std::str::FromStr for Provider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Provider::Auto),
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" => Ok(Provider::TensorRt),
            _ => Err(Error::invalid(format!(
                "provider must be auto, cpu, cuda or tensorrt, got '{s}'"
            ))),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Auto => "auto",
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        })
    }
}

/// How the CUDA provider picks each convolution's cuDNN algorithm, once per input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvSearch {
    /// Time every algorithm and keep the fastest (ONNX Runtime's default): the fastest
    /// calls once a shape has been seen, the slowest first call.
    #[default]
    Exhaustive,
    /// cuDNN's heuristics choose without timing.
    Heuristic,
    /// cuDNN's default algorithm, no search.
    Fixed,
}

impl std::str::FromStr for ConvSearch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exhaustive" => Ok(ConvSearch::Exhaustive),
            "heuristic" => Ok(ConvSearch::Heuristic),
            "fixed" => Ok(ConvSearch::Fixed),
            _ => Err(Error::invalid(format!(
                "conv_search must be exhaustive, heuristic or fixed, got '{s}'"
            ))),
        }
    }
}

impl std::fmt::Display for ConvSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvSearch::Exhaustive => "exhaustive",
            ConvSearch::Heuristic => "heuristic",
            ConvSearch::Fixed => "fixed",
        })
    }
}

/// GPU provider settings (ignored on CPU).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct GpuOptions {
    /// CUDA device ordinal.
    pub device_id: i32,
    /// Let TensorRT build fp16 engines (the warp grid stays fp32 in the graph).
    pub fp16: bool,
    /// Upper bound of the CUDA memory arena (bytes); `None`: the provider's default.
    pub memory_limit_bytes: Option<usize>,
    /// Where TensorRT caches built engines (building one takes minutes).
    pub engine_cache_dir: Option<PathBuf>,
    /// The CUDA provider's convolution algorithm search.
    pub conv_search: ConvSearch,
}

/// Registers `requested` on the builder and returns the provider actually in use.
pub(crate) fn register(
    builder: &mut SessionBuilder,
    requested: Provider,
    gpu: &GpuOptions,
) -> Result<Provider> {
    let tensorrt = || {
        let mut t = ep::TensorRT::default()
            .with_device_id(gpu.device_id)
            .with_fp16(gpu.fp16);
        if let Some(dir) = &gpu.engine_cache_dir {
            t = t
                .with_engine_cache(true)
                .with_engine_cache_path(dir.display().to_string());
        }
        t
    };
    let cuda = || {
        let search = match gpu.conv_search {
            ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
            ConvSearch::Fixed => ep::cuda::ConvAlgorithmSearch::Default,
        };
        let mut c = ep::CUDA::default()
            .with_device_id(gpu.device_id)
            .with_conv_algorithm_search(search);
        if let Some(limit) = gpu.memory_limit_bytes {
            c = c.with_memory_limit(limit);
        }
        c
    };
    let attempt =
        |builder: &mut SessionBuilder, which: Provider| -> std::result::Result<(), String> {
            let available = match which {
                Provider::TensorRt => ep::TensorRT::is_available(),
                Provider::Cuda => ep::CUDA::is_available(),
                _ => Ok(true),
            }
            .map_err(|e| e.to_string())?;
            if !available {
                return Err(
                    "this ONNX Runtime library was built without it (the CPU wheel `onnxruntime`; \
                 GPU providers need `onnxruntime-gpu`)"
                        .to_string(),
                );
            }
            let r = match which {
                Provider::TensorRt => tensorrt().register(builder),
                Provider::Cuda => cuda().register(builder),
                _ => Ok(()),
            };
            r.map_err(|e| e.to_string())
        };
    match requested {
        Provider::Cpu => Ok(Provider::Cpu),
        Provider::Cuda | Provider::TensorRt => {
            attempt(builder, requested).map_err(|reason| Error::ProviderUnavailable {
                provider: requested.to_string(),
                reason,
            })?;
            if requested == Provider::TensorRt {
                // Nodes TensorRT does not take run on CUDA rather than on the CPU.
                let _ = attempt(builder, Provider::Cuda);
            }
            Ok(requested)
        }
        Provider::Auto => {
            for which in [Provider::TensorRt, Provider::Cuda] {
                match attempt(builder, which) {
                    Ok(()) => {
                        if which == Provider::TensorRt {
                            let _ = attempt(builder, Provider::Cuda);
                        }
                        return Ok(which);
                    }
                    Err(reason) => log::info!("provider {which} not used: {reason}"),
                }
            }
            Ok(Provider::Cpu)
        }
    }
}

/// The providers this ONNX Runtime library can run, best first (TensorRT, CUDA, CPU).
pub fn available() -> Result<Vec<Provider>> {
    let mut found = Vec::new();
    for (provider, ok) in [
        (Provider::TensorRt, ep::TensorRT::is_available()),
        (Provider::Cuda, ep::CUDA::is_available()),
        (Provider::Cpu, Ok(true)),
    ] {
        if ok.map_err(|e| Error::Runtime(e.to_string()))? {
            found.push(provider);
        }
    }
    Ok(found)
}
