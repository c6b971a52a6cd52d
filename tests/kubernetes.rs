//! `deploy/kubernetes`: every overlay renders (`kubectl kustomize`, where kubectl is installed),
//! every object passes the Kubernetes schemas offline and strictly (PyPI `kubernetes-validate`,
//! installed by `.ci/setup` into `target/kube-validate`), and the cross-object facts a schema
//! cannot see hold (`deploy/kubernetes/check.py`). The two configs the manifests carry pass
//! `mcp-fleet check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_manifests_render_validate_and_agree_with_each_other() {
    for config in ["proxy.toml", "database.toml"] {
        let (ok, out) = run(Command::new(common::BIN)
            .args(["check", "--config"])
            .arg(root().join("deploy/kubernetes/base").join(config)));
        assert!(ok, "{config}: {out}");
    }
    let kubectl = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if !kubectl {
        // Debian carries no kubectl; without it the overlays cannot be rendered here.
        println!("kubectl is not installed: the overlays were not rendered");
        return;
    }
    let validator = root().join("target/kube-validate");
    assert!(
        validator.join("kubernetes_validate").exists(),
        "kubernetes-validate is missing from {}: run .ci/setup",
        validator.display()
    );
    let out_dir = tempfile::tempdir().expect("tempdir");
    for overlay in ["dev", "production"] {
        let (ok, rendered) = run(Command::new("kubectl")
            .arg("kustomize")
            .arg(root().join("deploy/kubernetes/overlays").join(overlay)));
        assert!(ok, "{overlay}: {rendered}");
        let file = out_dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &rendered).expect("write");
        let (ok, out) = run(Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .arg(&file)
            .env("PYTHONPATH", &validator));
        assert!(ok, "{overlay} does not pass the schemas:\n{out}");
        let (ok, out) = run(Command::new("python3")
            .arg(root().join("deploy/kubernetes/check.py"))
            .arg(&file)
            .env("PYTHONPATH", &validator));
        assert!(ok, "{overlay}:\n{out}");
        println!("{overlay}: {}", out.trim());
        assert!(
            !Path::new(&file).exists() || !rendered.contains("kind: Secret"),
            "the session Secret must be created out of band, not rendered"
        );
    }
}
