//! The `quantize` and `export` steps, parsed so that every combination that exists is valid.

use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, CalibrationWire};
use super::{Operation, StepNeeds};

use crate::selection::{NamePattern, TensorSelection};
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SchemeName {
    Int8,
    Int4,
    Fp8E4m3,
    Fp16,
    Bf16,
    Kmeans,
}

/// How integer codes are chosen: rounding each weight to the nearest step, or one of the
/// calibrated methods that look at the layer's inputs (transformers with a text dataset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuantMethod {
    /// Round to nearest, weight by weight (no data).
    #[default]
    Rtn,
    /// GPTQ (Frantar et al. 2023): columns rounded in turn, each error compensated through the
    /// inverse of the layer's input Hessian.
    Gptq,
    /// AWQ (Lin et al. 2024): per-input-channel scales searched on the calibration
    /// activations and folded into the preceding norm or layer, then round to nearest.
    Awq,
    /// AWQ's scales, then GPTQ.
    AwqGptq,
}

impl QuantMethod {
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Rtn => "rtn",
            QuantMethod::Gptq => "gptq",
            QuantMethod::Awq => "awq",
            QuantMethod::AwqGptq => "awq_gptq",
        }
    }

    pub fn calibrates(self) -> bool {
        self != QuantMethod::Rtn
    }

    pub fn uses_gptq(self) -> bool {
        matches!(self, QuantMethod::Gptq | QuantMethod::AwqGptq)
    }

    pub fn uses_awq(self) -> bool {
        matches!(self, QuantMethod::Awq | QuantMethod::AwqGptq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GranularityName {
    Tensor,
    Channel,
    Group,
}

/// How a step stores the tensors it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Every element, as usual.
    #[default]
    Dense,
    /// A bitmask of non-zeros plus the packed non-zero values (see docs/sparse-format.md).
    Sparse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Int8 {
        symmetric: bool,
        granularity: Granularity,
    },
    Int4 {
        symmetric: bool,
        group_size: usize,
    },
    Fp8E4m3 {
        per_channel: bool,
    },
    Fp16,
    Bf16,
    Kmeans {
        bits: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Tensor,
    Channel,
    Group(usize),
}

impl Scheme {
    /// Weights per scale along a row, when the row length must be a multiple of it.
    pub fn group_size(&self) -> Option<usize> {
        match self {
            Scheme::Int8 {
                granularity: Granularity::Group(g),
                ..
            } => Some(*g),
            Scheme::Int4 { group_size, .. } => Some(*group_size),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QuantizeWire", into = "QuantizeWire")]
pub struct QuantizeStep {
    pub scheme: Scheme,
    pub selection: TensorSelection,
    pub store: Storage,
    /// Also write the dequantized weights, dense, in the input's layout.
    pub dequantized_copy: bool,
    pub method: QuantMethod,
    /// GPTQ: round the columns with the largest inputs first (static groups).
    pub act_order: bool,
    /// What calibrated methods read of the text dataset.
    pub calibration: Calibration,
}

/// The JSON form of a `quantize` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuantizeWire {
    pub scheme: SchemeName,
    /// int8/int4: symmetric (default true) or asymmetric with a zero point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// int8: tensor, channel (default; axis 0) or group. fp8_e4m3: tensor (default) or channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<GranularityName>,
    /// int8 with group granularity (default 128), int4 (32, 64 or 128; default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    /// kmeans: 2 to 8 bits per index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
    #[serde(default)]
    pub store: Storage,
    /// Also write a dense copy (the input's dtypes and layout) with the quantization error
    /// baked in, for tools that read no quantized format.
    #[serde(default)]
    pub dequantized_copy: bool,
    /// int8/int4 on a transformer with a text dataset: `rtn` (default, no data), `gptq`,
    /// `awq` or `awq_gptq`, calibrated on the dataset's calibration split block by block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<QuantMethod>,
    /// `gptq`, `awq_gptq`: round the columns with the largest inputs first (static groups:
    /// the file needs no `g_idx`). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_order: Option<bool>,
    /// Calibrated methods: calibration tokens read, their window, the Hessian's damping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub include: Option<Vec<NamePattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub exclude: Vec<NamePattern>,
}

fn refuse(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

impl TryFrom<QuantizeWire> for QuantizeStep {
    type Error = ParseError;

    fn try_from(w: QuantizeWire) -> Result<Self, ParseError> {
        let only = |field: &str, present: bool, schemes: &str| {
            if present {
                Err(refuse(format!("{field} applies to {schemes} only")))
            } else {
                Ok(())
            }
        };
        if w.scheme != SchemeName::Kmeans {
            only("bits", w.bits.is_some(), "kmeans")?;
        }
        let scheme = match w.scheme {
            SchemeName::Int8 => {
                let granularity = match w.granularity.unwrap_or(GranularityName::Channel) {
                    GranularityName::Tensor => Granularity::Tensor,
                    GranularityName::Channel => Granularity::Channel,
                    GranularityName::Group => Granularity::Group(group_size(w.group_size, &[])?),
                };
                if !matches!(granularity, Granularity::Group(_)) {
                    only("group_size", w.group_size.is_some(), "group granularity")?;
                }
                Scheme::Int8 {
                    symmetric: w.symmetric.unwrap_or(true),
                    granularity,
                }
            }
            SchemeName::Int4 => {
                if matches!(w.granularity, Some(g) if g != GranularityName::Group) {
                    return Err(refuse(
                        "int4 is group-wise only; set group_size (32, 64 or 128)",
                    ));
                }
                Scheme::Int4 {
                    symmetric: w.symmetric.unwrap_or(true),
                    group_size: group_size(w.group_size, &[32, 64, 128])?,
                }
            }
            SchemeName::Fp8E4m3 => {
                only("group_size", w.group_size.is_some(), "int8 and int4")?;
                only("symmetric", w.symmetric.is_some(), "int8 and int4")?;
                let per_channel = match w.granularity.unwrap_or(GranularityName::Tensor) {
                    GranularityName::Tensor => false,
                    GranularityName::Channel => true,
                    GranularityName::Group => {
                        return Err(refuse("fp8_e4m3 takes tensor or channel granularity"))
                    }
                };
                Scheme::Fp8E4m3 { per_channel }
            }
            SchemeName::Fp16 | SchemeName::Bf16 | SchemeName::Kmeans => {
                only("group_size", w.group_size.is_some(), "int8 and int4")?;
                only("symmetric", w.symmetric.is_some(), "int8 and int4")?;
                only(
                    "granularity",
                    w.granularity.is_some(),
                    "int8, int4 and fp8_e4m3",
                )?;
                match w.scheme {
                    SchemeName::Fp16 => Scheme::Fp16,
                    SchemeName::Bf16 => Scheme::Bf16,
                    _ => match w.bits {
                        Some(b @ 2..=8) => Scheme::Kmeans { bits: b },
                        Some(b) => {
                            return Err(refuse(format!("kmeans bits must be 2 to 8, got {b}")))
                        }
                        None => return Err(refuse("kmeans needs bits (2 to 8)")),
                    },
                }
            }
        };
        if matches!(&w.include, Some(v) if v.is_empty()) {
            return Err(refuse(
                "include is empty, so nothing would be quantized; omit it to select every weight",
            ));
        }
        let method = w.method.unwrap_or_default();
        if method.calibrates()
            && !matches!(
                scheme,
                Scheme::Int4 { .. }
                    | Scheme::Int8 {
                        granularity: Granularity::Channel | Granularity::Group(_),
                        ..
                    }
            )
        {
            return Err(refuse(format!(
                "method {} rounds to an integer grid per channel or group: use int4, or int8 with channel or group granularity",
                method.name()
            )));
        }
        if w.act_order.is_some() && !method.uses_gptq() {
            return Err(refuse("act_order applies to methods gptq and awq_gptq"));
        }
        if w.calibration.is_some() && !method.calibrates() {
            return Err(refuse(
                "calibration applies to the calibrated methods (gptq, awq, awq_gptq)",
            ));
        }
        Ok(QuantizeStep {
            scheme,
            selection: TensorSelection::new(w.include, w.exclude)?,
            store: w.store,
            dequantized_copy: w.dequantized_copy,
            method,
            act_order: w.act_order.unwrap_or(false),
            calibration: w
                .calibration
                .map(Calibration::try_from)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

fn group_size(given: Option<usize>, allowed: &[usize]) -> Result<usize, ParseError> {
    let g = given.unwrap_or(128);
    if g == 0 || g > 1 << 20 || (!allowed.is_empty() && !allowed.contains(&g)) {
        let list = if allowed.is_empty() {
            "a positive number up to 1048576".to_owned()
        } else {
            format!("one of {allowed:?}")
        };
        return Err(refuse(format!("group_size must be {list}, got {g}")));
    }
    Ok(g)
}

impl From<QuantizeStep> for QuantizeWire {
    fn from(s: QuantizeStep) -> Self {
        let (scheme, symmetric, granularity, group_size, bits) = match s.scheme {
            Scheme::Int8 {
                symmetric,
                granularity,
            } => {
                let (g, size) = match granularity {
                    Granularity::Tensor => (GranularityName::Tensor, None),
                    Granularity::Channel => (GranularityName::Channel, None),
                    Granularity::Group(n) => (GranularityName::Group, Some(n)),
                };
                (SchemeName::Int8, Some(symmetric), Some(g), size, None)
            }
            Scheme::Int4 {
                symmetric,
                group_size,
            } => (
                SchemeName::Int4,
                Some(symmetric),
                Some(GranularityName::Group),
                Some(group_size),
                None,
            ),
            Scheme::Fp8E4m3 { per_channel } => (
                SchemeName::Fp8E4m3,
                None,
                Some(if per_channel {
                    GranularityName::Channel
                } else {
                    GranularityName::Tensor
                }),
                None,
                None,
            ),
            Scheme::Fp16 => (SchemeName::Fp16, None, None, None, None),
            Scheme::Bf16 => (SchemeName::Bf16, None, None, None, None),
            Scheme::Kmeans { bits } => (SchemeName::Kmeans, None, None, None, Some(bits)),
        };
        QuantizeWire {
            scheme,
            symmetric,
            granularity,
            group_size,
            bits,
            store: s.store,
            dequantized_copy: s.dequantized_copy,
            method: s.method.calibrates().then_some(s.method),
            act_order: s.method.uses_gptq().then_some(s.act_order),
            calibration: s.method.calibrates().then(|| s.calibration.into()),
            include: s.selection.include,
            exclude: s.selection.exclude,
        }
    }
}

impl StepNeeds for QuantizeStep {
    fn writes_dense(&self) -> bool {
        false
    }
    fn selects(&self) -> Option<super::Selects<'_>> {
        Some(super::Selects {
            selection: &self.selection,
            scheme: Some(self.scheme),
        })
    }
    fn needs_architecture(&self) -> bool {
        false
    }
    fn needs_dataset(&self) -> bool {
        false
    }
    fn calibrates(&self) -> Option<&'static str> {
        self.method.calibrates().then(|| self.method.name())
    }
}

impl Operation for QuantizeStep {
    const OP: &'static str = "quantize";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<QuantizeStep, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let s = parse(json!({"scheme":"int8"})).unwrap();
        assert_eq!(
            s.scheme,
            Scheme::Int8 {
                symmetric: true,
                granularity: Granularity::Channel
            }
        );
        let s = parse(json!({"scheme":"int4","symmetric":false,"group_size":64})).unwrap();
        assert_eq!(
            s.scheme,
            Scheme::Int4 {
                symmetric: false,
                group_size: 64
            }
        );
        for (bad, needle) in [
            (json!({"scheme":"kmeans","bits":9}), "2 to 8"),
            (json!({"scheme":"kmeans"}), "needs bits"),
            (
                json!({"scheme":"int4","group_size":0}),
                "group_size must be",
            ),
            (
                json!({"scheme":"int4","group_size":48}),
                "one of [32, 64, 128]",
            ),
            (
                json!({"scheme":"int8","granularity":"group","group_size":0}),
                "group_size must be",
            ),
            (
                json!({"scheme":"int8","group_size":64}),
                "group granularity",
            ),
            (
                json!({"scheme":"fp8_e4m3","granularity":"group"}),
                "tensor or channel",
            ),
            (json!({"scheme":"int2"}), "unknown variant"),
            (json!({"scheme":"fp16","bits":4}), "kmeans only"),
        ] {
            let err = parse(bad.clone()).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
