//! Structured pruning (Li et al. 2017): removes the conv filters / linear neurons with the
//! smallest L1 norm, and shrinks everything that reads them: a batch norm in between and the
//! input of the next conv or linear layer (through a flatten, a whole H×W block per channel).
//! The architecture changes with the weights, so the smaller model really runs faster.

use candle_core::{Device, Tensor};

use crate::nn::network::{nn_error, Network, Param};
use crate::CompressError;
pub use domain::results::prune::LayerCut;
pub use domain::results::prune::StructuredReport;
use domain::{Architecture, ArchitectureWire, LayerKind, Sparsity, TensorSelection};

/// Which layer consumes layer `i`'s output units, with the batch norms in between and
/// whether a flatten lies on the way.
struct Consumer {
    next: usize,
    norms: Vec<usize>,
    /// Values per channel where a flatten lies on the way (H×W at the flatten).
    flatten_block: Option<usize>,
}

fn consumer(arch: &Architecture, i: usize) -> Option<Consumer> {
    let mut norms = Vec::new();
    let mut flatten_block = None;
    for (j, l) in arch.layers.iter().enumerate().skip(i + 1) {
        match l.kind {
            LayerKind::Linear { .. } | LayerKind::Conv2d { .. } => {
                return Some(Consumer {
                    next: j,
                    norms,
                    flatten_block,
                })
            }
            LayerKind::Batchnorm1d { .. } | LayerKind::Batchnorm2d { .. } => norms.push(j),
            LayerKind::Flatten => flatten_block = Some(l.input_shape[1..].iter().product()),
            // Softmax mixes units: removing one changes every output.
            LayerKind::Softmax | LayerKind::LogSoftmax => return None,
            _ => {}
        }
    }
    None
}

fn select(t: &Tensor, dim: usize, keep: &[u32]) -> candle_core::Result<Tensor> {
    let idx = Tensor::from_slice(keep, keep.len(), &Device::Cpu)?;
    t.index_select(&idx, dim)?.contiguous()
}

fn replace(net: &mut Network, name: &str, t: Tensor) -> Result<(), CompressError> {
    let role = net.params[name].role;
    let var = candle_core::Var::from_tensor(&t).map_err(nn_error)?;
    net.params.insert(name.to_owned(), Param { var, role });
    Ok(())
}

pub fn l1_filter(
    net: &mut Network,
    fraction: Sparsity,
    selection: &TensorSelection,
) -> Result<StructuredReport, CompressError> {
    let before = net.stored_values();
    let mut layers = Vec::new();
    let mut kept_whole = Vec::new();
    for i in 0..net.arch.layers.len() {
        let layer = net.arch.layers[i].clone();
        if !matches!(
            layer.kind,
            LayerKind::Linear { .. } | LayerKind::Conv2d { .. }
        ) {
            continue;
        }
        let wname = format!("{}.weight", layer.name);
        if !selection.selects(&wname, true) {
            continue;
        }
        let Some(c) = consumer(&net.arch, i) else {
            kept_whole.push(layer.name.clone());
            continue;
        };
        let w = net.tensor(&wname).clone();
        let units = w.dim(0).map_err(nn_error)?;
        let remove = ((fraction.get() * units as f64).floor() as usize).min(units - 1);
        let norms: Vec<f32> = w
            .abs()
            .and_then(|a| a.flatten_from(1))
            .and_then(|a| a.sum(1))
            .and_then(|s| s.to_vec1())
            .map_err(nn_error)?;
        let mut order: Vec<u32> = (0..units as u32).collect();
        order.sort_by(|&a, &b| {
            norms[b as usize]
                .total_cmp(&norms[a as usize])
                .then(a.cmp(&b))
        });
        let mut keep = order[..units - remove].to_vec();
        keep.sort_unstable();
        layers.push(LayerCut {
            layer: layer.name.clone(),
            units_before: units,
            units_after: keep.len(),
        });
        if remove == 0 {
            continue;
        }
        shrink(net, i, &c, &keep)?;
    }
    Ok(StructuredReport {
        layers,
        kept_whole,
        parameters_before: before,
        parameters_after: net.stored_values(),
    })
}

/// Removes output units of layer `i` (keeping `keep`) and the matching inputs downstream.
fn shrink(net: &mut Network, i: usize, c: &Consumer, keep: &[u32]) -> Result<(), CompressError> {
    let name = net.arch.layers[i].name.clone();
    let k = keep.len();
    for suffix in ["weight", "bias"] {
        let n = format!("{name}.{suffix}");
        if net.params.contains_key(&n) {
            let t = select(net.tensor(&n), 0, keep).map_err(nn_error)?;
            replace(net, &n, t)?;
        }
    }
    let mut wire = ArchitectureWire::from(net.arch.clone());
    set_out(&mut wire.layers[i].kind, k);
    for &j in &c.norms {
        let bn = net.arch.layers[j].name.clone();
        for suffix in ["weight", "bias", "running_mean", "running_var"] {
            let n = format!("{bn}.{suffix}");
            let t = select(net.tensor(&n), 0, keep).map_err(nn_error)?;
            replace(net, &n, t)?;
        }
        if let LayerKind::Batchnorm1d { num_features, .. }
        | LayerKind::Batchnorm2d { num_features, .. } = &mut wire.layers[j].kind
        {
            *num_features = k;
        }
    }
    let next = &net.arch.layers[c.next];
    let next_w = format!("{}.weight", next.name);
    let columns: Vec<u32> = if let Some(block) = c.flatten_block {
        // A flattened [C, H, W] activation: channel ch owns inputs ch·H·W .. (ch+1)·H·W.
        let block = block as u32;
        keep.iter()
            .flat_map(|&ch| ch * block..(ch + 1) * block)
            .collect()
    } else {
        keep.to_vec()
    };
    let t = select(net.tensor(&next_w), 1, &columns).map_err(nn_error)?;
    replace(net, &next_w, t)?;
    set_in(&mut wire.layers[c.next].kind, columns.len());
    net.arch = Architecture::try_from(wire).map_err(|e| {
        CompressError::InvalidRequest(format!("structured pruning broke the architecture: {e}"))
    })?;
    Ok(())
}

fn set_out(kind: &mut LayerKind, n: usize) {
    match kind {
        LayerKind::Linear { out_features, .. } => *out_features = n,
        LayerKind::Conv2d { out_channels, .. } => *out_channels = n,
        _ => {}
    }
}

fn set_in(kind: &mut LayerKind, n: usize) {
    match kind {
        LayerKind::Linear { in_features, .. } => *in_features = n,
        LayerKind::Conv2d { in_channels, .. } => *in_channels = n,
        _ => {}
    }
}
