//! GGUF for llama.cpp from a Hugging Face folder: the hyper-parameters, names, permuted q/k
//! rows, tokenizer and file type llama.cpp reads; blocks byte for byte what the reference
//! quantizer (gguf-py, llama.cpp's own Python package) makes of the same values; and imported
//! back, the model evaluates as before within the quantization's error.

use reqwest::multipart;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::python_reference::reference_output;
use crate::transformers::{fixture, folder_files, upload_folder, upload_text};
use compressd::compress::format::gguf::reader::{GgufIndex, GgufValue};

async fn export(app: &TestApp, model: &Value, ty: &str) -> (Value, Vec<u8>) {
    let job = app
        .submit(
            model["id"].as_str().unwrap(),
            json!([{"op":"export","format":"gguf","type":ty}]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{ty}: {job:#}");
    let bytes = app.model_artifact(&job).await;
    (job, bytes)
}

/// What gguf-py makes of the fixture's weights (permuted as llama.cpp's converter permutes
/// them) in `ty`, compared block for block with compressd's file.
fn reference_blocks_agree(file: &[u8], ty: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, file).unwrap();
    let script = r#"
import sys, json, struct
try:
    import gguf, numpy as np
    from gguf import quants
except ImportError:
    print("NO_GGUF"); sys.exit(0)
raw = open(sys.argv[2], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name):
    h = header[name]; a, b = h["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(h["shape"])
def permute(t, heads):
    return t.reshape(heads, 2, t.shape[0] // heads // 2, t.shape[1]).swapaxes(1, 2).reshape(t.shape)
r = gguf.GGUFReader(sys.argv[1])
want = getattr(gguf.GGMLQuantizationType, sys.argv[3])
checked = 0
for t in r.tensors:
    if t.tensor_type != want:
        continue
    name = t.name
    if name == "token_embd.weight":
        hf = "model.embed_tokens.weight"
    else:
        layer, rest = name[4:].split(".", 1)
        module = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                  "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj"}[rest.rsplit(".", 1)[0]]
        hf = f"model.layers.{layer}.{module}.weight"
    values = tensor(hf)
    if name.endswith("attn_q.weight"):
        values = permute(values, 4)
    if name.endswith("attn_k.weight"):
        values = permute(values, 2)
    ours = np.asarray(t.data).tobytes()
    theirs = quants.quantize(np.ascontiguousarray(values), want).tobytes()
    if ours != theirs:
        print("DIFFER " + name); sys.exit(1)
    checked += 1
print(json.dumps({"checked": checked, "keys": {k: str(f.contents()) if k != "tokenizer.ggml.tokens" else len(f.data) for k, f in r.fields.items() if not k.startswith("GGUF.") and k not in ("tokenizer.ggml.merges", "tokenizer.ggml.token_type")}}))
"#;
    let mut python = std::process::Command::new("python3");
    python
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(fixture("llama/model.safetensors"))
        .arg(ty);
    let require = "COMPRESSD_REQUIRE_PYTHON_GGUF";
    let Some(text) = reference_output(ty, &mut python, "NO_GGUF", require, "gguf") else {
        return;
    };
    let report: Value = serde_json::from_str(text.trim()).unwrap();
    assert!(report["checked"].as_u64().unwrap() >= 14, "{report:#}");
    assert_eq!(report["keys"]["general.architecture"], "llama");
    assert_eq!(report["keys"]["tokenizer.ggml.pre"], "smollm");
}

/// llama-cpp-python (which builds llama.cpp) runs the file: its token ids for the fixture
/// text and its perplexity over the same 64-token windows. None when it is not installed
/// (COMPRESSD_REQUIRE_LLAMA_CPP makes that a failure).
pub(crate) fn llama_cpp_perplexity(file: &[u8]) -> Option<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, file).unwrap();
    let script = r#"
import sys, json, math
try:
    import numpy as np
    from llama_cpp import Llama
except ImportError:
    print("NO_LLAMA_CPP"); sys.exit(0)
m = Llama(model_path=sys.argv[1], n_ctx=256, logits_all=True, verbose=False, n_threads=2)
ids = m.tokenize(open(sys.argv[2], "rb").read(), add_bos=False, special=False)[:512]
nll, n = 0.0, 0
for start in range(0, len(ids), 64):
    w = ids[start:start + 64]
    if len(w) < 2:
        continue
    m.reset()
    m.eval(w)
    for j in range(len(w) - 1):
        l = np.array(m.scores[j], dtype=np.float64)
        l -= l.max()
        nll -= l[w[j + 1]] - math.log(np.exp(l).sum())
        n += 1
print(json.dumps({"predictions": n, "perplexity": math.exp(nll / n), "ids": ids}))
"#;
    let mut python = std::process::Command::new("python3");
    python
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(fixture("text.txt"));
    let text = reference_output(
        "llama.cpp perplexity",
        &mut python,
        "NO_LLAMA_CPP",
        "COMPRESSD_REQUIRE_LLAMA_CPP",
        "llama-cpp-python",
    )?;
    Some(serde_json::from_str(text.trim()).unwrap())
}

async fn a_llama_folder_exports_gguf_that_llama_cpp_reads(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let res = upload_folder(&app, folder_files(&fixture("llama")), "llama").await;
    assert_eq!(res.status(), 201);
    let model: Value = res.json().await.unwrap();
    for ty in ["Q8_0", "Q4_1", "Q4_0"] {
        let (_, bytes) = export(&app, &model, ty).await;
        let index = GgufIndex::parse(&bytes).unwrap();
        let get = |k: &str| index.get(k).cloned();
        assert_eq!(
            get("general.architecture"),
            Some(GgufValue::Str("llama".into()))
        );
        assert_eq!(get("llama.block_count").and_then(|v| v.as_u64()), Some(2));
        assert_eq!(
            get("llama.attention.head_count_kv").and_then(|v| v.as_u64()),
            Some(2)
        );
        assert_eq!(
            get("tokenizer.ggml.model"),
            Some(GgufValue::Str("gpt2".into()))
        );
        assert_eq!(
            get("tokenizer.ggml.tokens").and_then(|v| v.as_array().map(<[_]>::len)),
            Some(384)
        );
        assert!(
            index.tensors.iter().all(|t| t.name != "output.weight"),
            "tied: no output tensor"
        );
        let q = index
            .tensors
            .iter()
            .find(|t| t.name == "blk.1.attn_q.weight")
            .unwrap();
        assert_eq!(q.shape, vec![64, 64]);
        let norm = index
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_norm.weight")
            .unwrap();
        assert_eq!(norm.ggml_type, 0, "norms stay F32");
        reference_blocks_agree(&bytes, ty);
    }
    // Imported back, the Q8_0 file evaluates like the original, within Q8_0's error.
    let (_, q8) = export(&app, &model, "Q8_0").await;
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(q8.clone()).file_name("llama-q8.gguf"),
    );
    let back: Value = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["format"], "gguf", "{back:#}");
    let text = std::fs::read(fixture("text.txt")).unwrap();
    let split = json!({"by":"bytes","evaluation":[0, text.len()],"calibration":[0, 0]});
    let data: Value = upload_text(&app, &text, Some(split))
        .await
        .json()
        .await
        .unwrap();
    let job = app
        .submit_with_dataset(
            &back,
            &data,
            json!([{"op":"evaluate","window":64,"max_tokens":512}]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let ppl = job["metrics"]["steps"][0]["fidelity"]["before"]["perplexity"]
        .as_f64()
        .unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama/perplexity.json")).unwrap())
            .unwrap();
    let original = want["perplexity"].as_f64().unwrap();
    assert!(
        (ppl / original - 1.0).abs() < 0.01,
        "Q8_0 round trip: {ppl} vs {original}"
    );
    // llama.cpp tokenizes the text as compressd does and scores the same windows alike: the
    // F16 file as PyTorch scores the original, the Q8_0 file as compressd scores it.
    let tok =
        compressd::compress::transformer::TextTokenizer::from_file(&fixture("bpe.tokenizer.json"))
            .unwrap();
    let ours = tok
        .encode(&String::from_utf8(text.clone()).unwrap(), false)
        .unwrap();
    let (_, f16) = export(&app, &model, "F16").await;
    for (file, compressd_ppl, what) in [(f16, original, "F16"), (q8, ppl, "Q8_0")] {
        let Some(llama) = llama_cpp_perplexity(&file) else {
            break;
        };
        let theirs: Vec<u32> = llama["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(theirs, ours[..theirs.len()], "llama.cpp's token ids");
        assert_eq!(llama["predictions"], want["predictions"]);
        let theirs = llama["perplexity"].as_f64().unwrap();
        assert!(
            (theirs / compressd_ppl - 1.0).abs() < 0.005,
            "{what}: llama.cpp {theirs} vs {compressd_ppl}"
        );
    }
    // The mixtures name their types as llama-quantize does; F16 keeps the rest F32.
    let (job, bytes) = export(&app, &model, "Q4_K_M").await;
    let index = GgufIndex::parse(&bytes).unwrap();
    assert_eq!(
        index.get("general.file_type").and_then(|v| v.as_u64()),
        Some(15)
    );
    assert!(!job["metrics"]["steps"][0]["kept_tensors"]
        .as_array()
        .unwrap()
        .is_empty());
    let (_, f16) = export(&app, &model, "F16").await;
    let index = GgufIndex::parse(&f16).unwrap();
    assert!(index
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2)
        .all(|t| t.ggml_type == 1));
    app.finish().await;
}

crate::on_each_backend!(a_llama_folder_exports_gguf_that_llama_cpp_reads);
