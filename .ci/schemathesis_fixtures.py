"""Makes one of each resource on a running compressd, so that Schemathesis reaches the logic
behind `{id}` routes instead of 404s. Prints shell assignments: ST_MODEL_ID=… and so on."""
import json, struct, sys, time, urllib.request

base, key = sys.argv[1], sys.argv[2]


def safetensors(tensors):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def call(method, path, body=None, content_type="application/json"):
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req) as res:
        return json.loads(res.read())


model = safetensors({"0.weight": ("F32", [4, 8], f32([(i % 7 - 3) / 3 for i in range(32)])), "0.bias": ("F32", [4], f32([0.0] * 4))})
model_id = call("POST", "/v1/models?name=st", model, "application/octet-stream")["id"]
arch = json.dumps({"input_shape": [8], "layers": [{"type": "linear", "in_features": 8, "out_features": 4}]}).encode()
call("PUT", f"/v1/models/{model_id}/architecture", arch)
inputs = f32([((i * 37) % 11 - 5) / 5 for i in range(16 * 8)])
labels = bytes(i % 4 for i in range(16))
dataset = safetensors({
    "train_inputs": ("F32", [16, 8], inputs), "train_labels": ("U8", [16], labels),
    "test_inputs": ("F32", [16, 8], inputs), "test_labels": ("U8", [16], labels),
})
dataset_id = call("POST", "/v1/datasets?name=st", dataset, "application/octet-stream")["id"]
job = call("POST", "/v1/jobs", json.dumps({"model_id": model_id, "dataset_id": dataset_id, "pipeline": [{"op": "prune", "sparsity": 0.5}, {"op": "evaluate"}]}).encode())
for _ in range(600):
    job = call("GET", f"/v1/jobs/{job['id']}")
    if job["status"] in ("succeeded", "failed", "cancelled"):
        break
    time.sleep(0.1)
assert job["status"] == "succeeded", job
upload_id = call("POST", "/v1/uploads", b"{}")["id"]
print(f"ST_MODEL_ID={model_id} ST_DATASET_ID={dataset_id} ST_JOB_ID={job['id']} "
      f"ST_ARTIFACT_ID={job['artifacts'][0]['id']} ST_UPLOAD_ID={upload_id}")
