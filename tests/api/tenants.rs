//! Tenants and keys: keys from the admin API, every route scoped to the caller's tenant,
//! revocation, the loopback-only open mode, quotas and rate limits.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::mlp;

const ADMIN: &str = "admin-secret-for-tests";

/// A client that sends one tenant's key.
pub struct Tenant {
    pub key: String,
    pub http: reqwest::Client,
}

pub async fn tenant(app: &TestApp, name: &str, limits: Value) -> Tenant {
    let mut body = json!({ "name": name });
    body.as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    let res = app
        .http
        .post(app.url("/v1/admin/tenants"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let info: Value = res.json().await.unwrap();
    assert_eq!(
        info["usage"],
        json!({"stored_bytes": 0, "running_jobs": 0, "queued_jobs": 0})
    );
    assert!(info["webhook_secret"]
        .as_str()
        .unwrap()
        .starts_with("whsec_"));
    let key = new_key(app, name, json!({})).await;
    Tenant {
        http: client(&key),
        key,
    }
}

pub async fn new_key(app: &TestApp, tenant: &str, body: Value) -> String {
    let res = app
        .http
        .post(app.url(&format!("/v1/admin/tenants/{tenant}/keys")))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let created: Value = res.json().await.unwrap();
    created["key"].as_str().unwrap().to_owned()
}

pub fn client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn spawn(backend: Backend) -> Option<TestApp> {
    TestApp::spawn(backend, |c| c.admin_key = Some(ADMIN.into())).await
}

/// A GET of the admin API, with the admin key, answered as JSON.
async fn admin_get(app: &TestApp, path: &str) -> Value {
    json_of(
        app.http
            .get(app.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn json_of(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

/// Everything tenant A owns, made through the API: a model, a dataset, a finished job with
/// artifacts, a queued job, and a resumable upload.
struct Owned {
    model: String,
    dataset: String,
    job: String,
    queued: String,
    artifact: String,
    upload: String,
}

async fn make_things(app: &TestApp, a: &Tenant) -> Owned {
    let res = a
        .http
        .post(app.url("/v1/models?name=a-model"))
        .header("content-type", "application/octet-stream")
        .body(mlp())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let model = json_of(res).await["id"].as_str().unwrap().to_owned();
    let res = a
        .http
        .post(app.url("/v1/datasets?name=a-data"))
        .header("content-type", "application/octet-stream")
        .body(crate::training::dataset_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let dataset = json_of(res).await["id"].as_str().unwrap().to_owned();
    let submit = |pipeline: Value| {
        let http = a.http.clone();
        let url = app.url("/v1/jobs");
        let model = model.clone();
        async move {
            let res = http
                .post(url)
                .json(&json!({"model_id": model, "pipeline": pipeline, "cache": false}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            json_of(res).await["id"].as_str().unwrap().to_owned()
        }
    };
    let job = submit(json!([{"op": "prune", "sparsity": 0.5}])).await;
    app.run_jobs().await;
    let queued = submit(json!([{"op": "prune", "sparsity": 0.25}])).await;
    let done = json_of(
        a.http
            .get(app.url(&format!("/v1/jobs/{job}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let artifact = done["artifacts"][0]["id"].as_str().unwrap().to_owned();
    let res = a
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let upload = json_of(res).await["id"].as_str().unwrap().to_owned();
    Owned {
        model,
        dataset,
        job,
        queued,
        artifact,
        upload,
    }
}

async fn other_tenants_ids_are_not_found(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let a = tenant(&app, "alpha", json!({})).await;
    let b = tenant(&app, "beta", json!({})).await;
    let owned = make_things(&app, &a).await;
    let arch = json!({"input_shape": [8], "layers": []});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/models/{}", owned.model), None),
        (
            Method::GET,
            format!("/v1/models/{}/file", owned.model),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/models/{}/architecture", owned.model),
            Some(arch),
        ),
        (Method::DELETE, format!("/v1/models/{}", owned.model), None),
        (Method::GET, format!("/v1/datasets/{}", owned.dataset), None),
        (
            Method::DELETE,
            format!("/v1/datasets/{}", owned.dataset),
            None,
        ),
        (Method::GET, format!("/v1/jobs/{}", owned.job), None),
        (Method::GET, format!("/v1/jobs/{}/events", owned.job), None),
        (Method::GET, format!("/v1/jobs/{}/report", owned.job), None),
        (
            Method::POST,
            format!("/v1/jobs/{}/cancel", owned.queued),
            None,
        ),
        (Method::DELETE, format!("/v1/jobs/{}", owned.job), None),
        (
            Method::GET,
            format!("/v1/artifacts/{}", owned.artifact),
            None,
        ),
        (
            Method::GET,
            format!("/v1/artifacts/{}/file", owned.artifact),
            None,
        ),
        (Method::GET, format!("/v1/uploads/{}", owned.upload), None),
        (
            Method::PUT,
            format!("/v1/uploads/{}/parts/1", owned.upload),
            None,
        ),
        (
            Method::POST,
            format!("/v1/uploads/{}/complete", owned.upload),
            Some(json!({"sha256": "0".repeat(64)})),
        ),
        (
            Method::DELETE,
            format!("/v1/uploads/{}", owned.upload),
            None,
        ),
    ];
    for (method, path, body) in &routes {
        let mut req = b.http.request(method.clone(), app.url(path));
        req = match body {
            Some(b) => req.json(b),
            None if *method == Method::PUT => req.body(vec![1u8, 2, 3]),
            None => req,
        };
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404, "{method} {path} as another tenant");
        let problem = json_of(res).await;
        assert_eq!(
            problem["type"], "urn:compressd:problem:not-found",
            "{method} {path}"
        );
    }
    // Jobs cannot name another tenant's model or dataset either.
    let res = b
        .http
        .post(app.url("/v1/jobs"))
        .json(&json!({"model_id": owned.model, "pipeline": [{"op": "prune", "sparsity": 0.5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(res).await["type"],
        "urn:compressd:problem:model-not-found"
    );
    // Lists show only the caller's rows.
    for list in ["/v1/models", "/v1/datasets", "/v1/jobs"] {
        let theirs = json_of(b.http.get(app.url(list)).send().await.unwrap()).await;
        assert_eq!(
            theirs["data"].as_array().unwrap().len(),
            0,
            "{list} as beta"
        );
        let mine = json_of(a.http.get(app.url(list)).send().await.unwrap()).await;
        assert!(
            !mine["data"].as_array().unwrap().is_empty(),
            "{list} as alpha"
        );
    }
    // Nothing of A's changed: every route still answers A.
    for (path, status) in [
        (format!("/v1/models/{}", owned.model), 200),
        (format!("/v1/jobs/{}", owned.queued), 200),
        (format!("/v1/artifacts/{}/file", owned.artifact), 200),
        (format!("/v1/uploads/{}", owned.upload), 200),
    ] {
        let res = a.http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path} as alpha");
    }
    let queued = json_of(
        a.http
            .get(app.url(&format!("/v1/jobs/{}", owned.queued)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(queued["status"], "queued", "beta's cancel did not touch it");
    app.finish().await;
}

async fn keys_are_required_once_they_exist_and_revocation_is_immediate(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    // No key yet, loopback, but an admin key is set: the operator means keys to be needed.
    let res = app.http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let a = tenant(&app, "alpha", json!({})).await;
    for auth in [None, Some("Bearer cmpd_not-a-key"), Some("Basic YTpi")] {
        let mut req = app.http.get(app.url("/v1/models"));
        if let Some(h) = auth {
            req = req.header("authorization", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert!(res.headers().contains_key("www-authenticate"));
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        a.http
            .get(app.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The key is stored only as a hash; listings show a prefix.
    let keys = admin_get(&app, "/v1/admin/keys?tenant=alpha").await;
    let listed = keys.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(a.key.starts_with(listed[0]["prefix"].as_str().unwrap()));
    assert!(
        !keys.to_string().contains(&a.key),
        "the key itself is never listed"
    );
    let id = listed[0]["id"].as_str().unwrap();
    let res = app
        .http
        .delete(app.url(&format!("/v1/admin/keys/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = a.http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 401, "a revoked key is refused at once");
    // With every key revoked the server stays closed: an admin key is set.
    let res = app.http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(
        res.status(),
        401,
        "revoking the last key does not open the server"
    );
    // Admin routes take only the admin key.
    for auth in [None, Some(a.key.as_str()), Some("wrong")] {
        let mut req = app.http.get(app.url("/v1/admin/tenants"));
        if let Some(k) = auth {
            req = req.bearer_auth(k);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    app.finish().await;
}

async fn admin_api_is_off_without_an_admin_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let res = app
        .http
        .get(app.url("/v1/admin/tenants"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        json_of(res).await["type"],
        "urn:compressd:problem:admin-disabled"
    );
    app.finish().await;
}

async fn a_public_address_needs_keys(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // A job queued before: a process that refuses to serve must not run it.
    let model = app.upload_ok(mlp(), "m").await;
    let queued = app
        .submit(&model, json!([{"op":"prune","sparsity":0.5}]))
        .await;
    let mut config = app.config.clone();
    config.bind = "0.0.0.0:0".into();
    config.workers = Some(1);
    let refused = compressd::startup::Application::build(config.clone()).await;
    let message = format!("{:#}", refused.err().expect("refuses to start"));
    assert!(message.contains("refusing to serve"), "{message}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let job = app.job(&queued).await;
    assert_eq!(
        job["status"], "queued",
        "the refused process ran no job: {job:#}"
    );
    assert_eq!(job["attempts"], 0);
    config.workers = Some(0);
    // With a key in the store it starts, and wants the key.
    let store = app.app.as_ref().unwrap().store();
    let t = store
        .create_tenant("ops", &Default::default())
        .await
        .unwrap();
    let (_, key) = store.create_key(&t, "", None).await.unwrap();
    let public = compressd::startup::Application::build(config)
        .await
        .expect("starts with a key");
    let url = format!("http://127.0.0.1:{}/v1/models", public.port());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401);
    assert_eq!(client(&key).get(&url).send().await.unwrap().status(), 200);
    public.stop().await.unwrap();
    app.finish().await;
}

async fn quotas_and_rate_limits_answer_with_the_limit_named(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let model_bytes = mlp().len() as u64;
    let small = tenant(
        &app,
        "small",
        json!({"max_stored_bytes": model_bytes + 10, "max_queued_jobs": 1}),
    )
    .await;
    let upload = |name: &str| {
        small
            .http
            .post(app.url(&format!("/v1/models?name={name}")))
            .header("content-type", "application/octet-stream")
            .body(mlp())
    };
    let res = upload("one").send().await.unwrap();
    assert_eq!(res.status(), 201);
    let model = json_of(res).await["id"].as_str().unwrap().to_owned();
    // The same bytes again cost nothing: they are stored once.
    assert_eq!(upload("same-bytes").send().await.unwrap().status(), 201);
    let mut other = mlp();
    let last = other.len() - 1;
    other[last] ^= 1;
    let res = small
        .http
        .post(app.url("/v1/models?name=two"))
        .header("content-type", "application/octet-stream")
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let problem = json_of(res).await;
    assert_eq!(problem["limit"], "stored_bytes", "{problem:#}");
    assert_eq!(problem["type"], "urn:compressd:problem:quota-exceeded");
    let job = |s: f64| {
        small
            .http
            .post(app.url("/v1/jobs"))
            .json(&json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": s}]}))
    };
    assert_eq!(job(0.5).send().await.unwrap().status(), 202);
    let res = job(0.6).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(json_of(res).await["limit"], "queued_jobs");
    // The admin API shows usage beside the limits it is measured against.
    let tenants = admin_get(&app, "/v1/admin/tenants").await;
    let listed = tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "small")
        .unwrap();
    assert_eq!(
        listed["usage"],
        json!({"stored_bytes": model_bytes, "running_jobs": 0, "queued_jobs": 1}),
        "{listed:#}"
    );
    assert_eq!(listed["limits"]["max_queued_jobs"], 1);

    // Running jobs: a tenant at its limit waits while others run.
    let paused = tenant(&app, "paused", json!({"max_running_jobs": 0})).await;
    let res = paused
        .http
        .post(app.url("/v1/models?name=p"))
        .header("content-type", "application/octet-stream")
        .body(mlp())
        .send()
        .await
        .unwrap();
    let pmodel = json_of(res).await["id"].as_str().unwrap().to_owned();
    let res = paused
        .http
        .post(app.url("/v1/jobs"))
        .json(&json!({"model_id": pmodel, "pipeline": [{"op": "prune", "sparsity": 0.5}]}))
        .send()
        .await
        .unwrap();
    let pjob = json_of(res).await["id"].as_str().unwrap().to_owned();
    let outcomes = app.run_jobs().await;
    assert_eq!(outcomes.len(), 1, "only small's job ran: {outcomes:?}");
    let pj = json_of(
        paused
            .http
            .get(app.url(&format!("/v1/jobs/{pjob}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pj["status"], "queued");

    // Rate: 6 a minute allows a burst of one; the next request waits.
    let key = new_key(&app, "small", json!({"rate_limit_per_minute": 6})).await;
    let slow = client(&key);
    let header = |res: &reqwest::Response, name: &str| -> String {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Every answer says where the key stands, not only a refusal.
    let res = slow.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ratelimit-limit"), "1");
    assert_eq!(header(&res, "ratelimit-remaining"), "0");
    assert_eq!(header(&res, "ratelimit-policy"), "6;w=60;burst=1");
    let reset: u64 = header(&res, "ratelimit-reset").parse().unwrap();
    assert!((1..=10).contains(&reset), "RateLimit-Reset {reset}");
    let res = slow.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let wait: u64 = header(&res, "retry-after").parse().unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    assert_eq!(header(&res, "ratelimit-remaining"), "0");
    assert_eq!(json_of(res).await["limit"], "rate_per_minute");
    // Limits are per key: the tenant's other key is unaffected.
    let res = small.http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ratelimit-limit"), "120");
    let remaining: u32 = header(&res, "ratelimit-remaining").parse().unwrap();
    assert!((100..120).contains(&remaining), "{remaining}");
    app.finish().await;
}

/// The operator's subcommands work on the database while the server runs.
async fn keys_subcommands_make_list_and_revoke_keys(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // The database flag goes after the subcommand, where an operator types it.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_compressd"))
            .args(args)
            .args(["--database-url", &app.config.database_url])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key = cli(&["keys", "create", "--tenant", "ops", "--label", "ci"])
        .trim()
        .to_owned();
    assert!(key.starts_with("cmpd_"), "{key}");
    let http = client(&key);
    assert_eq!(
        http.get(app.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed = cli(&["keys", "list", "--tenant", "ops"]);
    assert!(
        listed.contains("live") && listed.contains(&key[..13]),
        "{listed}"
    );
    assert!(!listed.contains(&key), "the key itself is never listed");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    cli(&["keys", "revoke", &id]);
    assert_eq!(
        http.get(app.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Limits change one at a time; --reset returns the others to the defaults.
    let limits_of_ops = || {
        let list = cli(&["tenants", "list"]);
        let line = list
            .lines()
            .find(|l| l.starts_with("ops "))
            .unwrap_or_else(|| panic!("{list}"))
            .to_owned();
        line.split_whitespace()
            .skip(1)
            .take(3)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    cli(&["tenants", "limits", "ops", "--max-queued-jobs", "3"]);
    assert_eq!(limits_of_ops(), ["default", "default", "3"]);
    cli(&["tenants", "limits", "ops", "--max-running-jobs", "2"]);
    assert_eq!(limits_of_ops(), ["default", "2", "3"]);
    cli(&[
        "tenants",
        "limits",
        "ops",
        "--reset",
        "--max-stored-bytes",
        "1000",
    ]);
    assert_eq!(limits_of_ops(), ["1000", "default", "default"]);
    // Usage beside the limits: what the open-mode tenant holds now.
    app.upload_ok(mlp(), "counted").await;
    let list = cli(&["tenants", "list"]);
    let local: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("local "))
        .unwrap_or_else(|| panic!("{list}"))
        .split_whitespace()
        .skip(4)
        .collect();
    assert_eq!(
        local,
        [mlp().len().to_string().as_str(), "0", "0"],
        "{list}"
    );
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_compressd"))
        .args(["serve", "--log-format", "yaml"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("[possible values: text, json]"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    app.finish().await;
}

/// The first key ends open mode; `keys create --adopt-local` keeps what was stored before it
/// visible, to the new key, with its jobs' idempotency keys.
async fn keys_create_adopts_what_open_mode_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "before-keys").await;
    let body = json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5}]});
    let submit = |http: reqwest::Client| {
        http.post(app.url("/v1/jobs"))
            .header("idempotency-key", "nightly-1")
            .json(&body)
            .send()
    };
    let job = json_of(submit(app.http.clone()).await.unwrap()).await;
    app.run_jobs().await;

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_compressd"))
            .args(args)
            .args(["--database-url", &app.config.database_url])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Without the flag and without a terminal: nothing moves, and the command says how.
    let (kept_key, said) = cli(&["keys", "create", "--tenant", "team"]);
    assert!(
        said.contains("1 models, 0 datasets and 1 jobs") && said.contains("--adopt-local"),
        "{said}"
    );
    let get =
        |req: reqwest::RequestBuilder| async move { json_of(req.send().await.unwrap()).await };
    let models = get(client(&kept_key).get(app.url("/v1/models"))).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 0, "{models}");

    let (key, said) = cli(&["keys", "create", "--tenant", "team", "--adopt-local"]);
    assert!(
        said.contains("moved 1 models, 0 datasets and 1 jobs"),
        "{said}"
    );
    let team = client(&key);
    let models = get(team.get(app.url("/v1/models"))).await;
    assert_eq!(models["data"][0]["id"], model.as_str());
    let seen = get(team.get(app.url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap())))).await;
    assert_eq!(seen["status"], "succeeded", "{seen:#}");
    let res = team
        .get(app.url(seen["result"]["file_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the result downloads with the new key");
    let again = submit(team.clone()).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], job["id"]);

    // Nothing is left to move; a third key says nothing about it.
    let (_, said) = cli(&["keys", "create", "--tenant", "team", "--adopt-local"]);
    assert!(!said.contains("moved"), "{said}");
    app.finish().await;
}

crate::on_each_backend!(
    keys_create_adopts_what_open_mode_stored,
    keys_subcommands_make_list_and_revoke_keys,
    other_tenants_ids_are_not_found,
    keys_are_required_once_they_exist_and_revocation_is_immediate,
    admin_api_is_off_without_an_admin_key,
    a_public_address_needs_keys,
    quotas_and_rate_limits_answer_with_the_limit_named,
);
