"""The browser shell's command vetting: what runs, what is refused, and why (one line)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.console.commands import ShellRules, parse
from edge.console.errors import CommandRefusedError


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "app.yaml").write_text("kind: ConfigMap\n")
    (d / "charts").mkdir()
    return d


ALLOWED = [
    ("kubectl get pods -n demo", "get"),
    ("kubectl -n demo get pods -o wide", "get"),
    ("kubectl --namespace=demo get pods", "get"),
    ("kubectl --request-timeout 5s get pods", "get"),
    ("kubectl get pods -o jsonpath='{.items[*].metadata.name}'", "get"),
    ("kubectl get pods -o go-template='{{range .items}}{{.metadata.name | printf}}{{end}}'", "get"),
    ('kubectl annotate pod p "note=$ is literal in single quotes"'.replace('"', "'"), "annotate"),
    ("kubectl apply -f app.yaml", "apply"),
    ("kubectl apply -f ./app.yaml", "apply"),
    ("kubectl apply -f -", "apply"),
    ("kubectl apply -Rf charts", "apply"),
    ("kubectl create configmap c --from-file=conf=app.yaml", "create"),
    ("kubectl create rolebinding rb --role=view --user=bob", "create"),
    ("kubectl exec -it web-0 -- cat /etc/passwd", "exec"),
    ("kubectl logs -f web-0", "logs"),
    ("kubectl cp demo/web-0:/etc/hosts hosts", "cp"),
    ("kubectl cp app.yaml web-0:/tmp/app.yaml", "cp"),
    ("kubectl get --raw /api/v1/namespaces", "get"),
    ("kubectl auth can-i get /healthz", "auth"),
    ("kubectl get configmap config", "get"),
    ("kubectl logs proxy", "logs"),
    ("kubectl get pods -- --kubeconfig=/etc/x", "get"),
    ("kubectl version", "version"),
    ("helm list -A", "list"),
    ("helm install web charts -n demo --set image.path=/data -f app.yaml", "install"),
    ("helm template web ./charts --set-file cfg=app.yaml", "template"),
]


@pytest.mark.parametrize(("line", "subcommand"), ALLOWED)
def test_allowed_lines_parse_to_the_same_argv(scratch: Path, line: str, subcommand: str) -> None:
    import shlex

    command = parse(line, scratch)
    assert command is not None
    tokens = shlex.split(line)
    assert command.program == tokens[0]
    assert command.args == tuple(tokens[1:])
    assert command.subcommand == subcommand


REFUSED = [
    ("ls", "program", "only kubectl and helm"),
    ("/usr/bin/kubectl get pods", "program", "only kubectl and helm"),
    ("bash -c 'kubectl get pods'", "program", "only kubectl and helm"),
    ("KUBECONFIG=/etc/x kubectl get pods", "env", "environment assignments"),
    ("kubectl get pods | grep web", "shell-syntax", "pipes"),
    ("kubectl get pods > out.txt", "shell-syntax", "redirects"),
    ("kubectl get pods; ls", "shell-syntax", "pipes"),
    ("kubectl get pods && ls", "shell-syntax", "pipes"),
    ("kubectl get pods $(whoami)", "shell-syntax", "command substitution"),
    ('kubectl get pods "$HOME"', "shell-syntax", "variables"),
    ("kubectl get pods `id`", "shell-syntax", "command substitution"),
    ("kubectl get pods 'unbalanced", "syntax", "cannot parse"),
    ("kubectl config view --raw", "subcommand", "kubectl config"),
    ("kubectl -n demo config view", "subcommand", "kubectl config"),
    ("kubectl --request-timeout 5 config view", "subcommand", "kubectl config"),
    ("kubectl proxy --port 8001", "subcommand", "kubectl proxy"),
    ("kubectl port-forward web-0 8080:80", "subcommand", "port-forward"),
    ("kubectl edit deploy web", "subcommand", "editors"),
    ("kubectl plugin list", "subcommand", "plugins"),
    ("kubectl kustomize .", "subcommand", "kustomize"),
    ("kubectl --bogus x config view", "flag", "unknown option"),
    ("kubectl --kubeconfig=/etc/x get pods", "flag", "--kubeconfig"),
    ("kubectl --kubeconfig /etc/x get pods", "flag", "--kubeconfig"),
    ("kubectl get pods --kubeconfig=/etc/x", "flag", "--kubeconfig"),
    ("kubectl get pods --context other", "flag", "--context"),
    ("kubectl get pods --cluster other", "flag", "--cluster"),
    ("kubectl get pods --user admin", "flag", "--user"),
    ("kubectl get pods --token abc", "flag", "--token"),
    ("kubectl get pods --as system:admin", "flag", "impersonation"),
    ("kubectl get pods --as-group system:masters", "flag", "impersonation"),
    ("kubectl get pods -s https://10.0.0.1", "flag", "-s"),
    ("kubectl get pods --server=https://10.0.0.1", "flag", "--server"),
    ("kubectl create -f app.yaml --edit", "flag", "editors"),
    ("kubectl apply -k .", "flag", "kustomize"),
    ("kubectl apply -f /etc/passwd", "path", "outside your scratch"),
    ("kubectl apply -f=/etc/passwd", "path", "outside your scratch"),
    ("kubectl apply -f/etc/passwd", "path", "outside your scratch"),
    ("kubectl apply --filename /etc/passwd", "path", "outside your scratch"),
    ("kubectl apply -Rf /etc", "path", "outside your scratch"),
    ("kubectl apply -f ../kubeconfig", "path", "outside your scratch"),
    ("kubectl apply -f https://example.com/x.yaml", "remote", "URL"),
    ("kubectl create secret generic s --from-file=/etc/shadow", "path", "outside"),
    ("kubectl create secret generic s --from-file=k=/etc/shadow", "path", "outside"),
    ("kubectl create secret tls s --cert=/etc/ssl/c.pem --key=k.pem", "path", "outside"),
    ("kubectl get pods -o go-template-file=/etc/passwd", "path", "outside"),
    ("kubectl get pods -ojsonpath-file=/etc/passwd", "path", "outside"),
    ("kubectl get pods -o go-template-file --template /etc/passwd", "path", "outside"),
    ("kubectl cp web-0:/etc/hosts /tmp/hosts", "path", "outside"),
    ("kubectl cp /etc/passwd web-0:/tmp/x", "path", "outside"),
    ("kubectl cp -- /etc/passwd web-0:/tmp/x", "path", "outside"),
    ("kubectl cluster-info dump --output-directory=/tmp/dump", "path", "outside"),
    ("helm plugin install https://x", "subcommand", "helm plugin"),
    ("helm --kubeconfig /etc/x list", "flag", "--kubeconfig"),
    ("helm list --kube-context other", "flag", "--kube-context"),
    ("helm list --kube-as-user admin", "flag", "impersonation"),
    ("helm install web charts --post-renderer ./x", "flag", "program"),
    ("helm install web /etc/charts", "path", "outside"),
    ("helm install web charts -f /etc/passwd", "path", "outside"),
    ("helm install web charts --values=/etc/passwd", "path", "outside"),
    ("helm install web charts --set-file a=app.yaml,b=/etc/passwd", "path", "outside"),
    ("helm repo add bitnami https://charts.bitnami.com/bitnami", "remote", "URL"),
    ("helm install web oci://registry/x", "remote", "URL"),
    ("helm install web x --repo https://charts.example", "remote", "fetching"),
    ("helm pull x --untardir /tmp", "path", "outside"),
]


@pytest.mark.parametrize(("line", "rule", "words"), REFUSED)
def test_refused_lines_answer_one_line(scratch: Path, line: str, rule: str, words: str) -> None:
    with pytest.raises(CommandRefusedError) as refused:
        parse(line, scratch)
    assert refused.value.rule == rule
    message = refused.value.message
    assert words in message
    assert "\n" not in message and message.startswith("refused:")


def test_blank_line_is_nothing(scratch: Path) -> None:
    assert parse("   ", scratch) is None


def test_symlink_out_of_scratch_is_refused(scratch: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("x")
    os.symlink(secret, scratch / "link.yaml")
    with pytest.raises(CommandRefusedError, match="outside your scratch"):
        parse("kubectl apply -f link.yaml", scratch)


def test_remote_fetching_can_be_allowed(scratch: Path) -> None:
    rules = ShellRules(allow_remote=True)
    assert parse("helm repo add b https://charts.example", scratch, rules) is not None
    assert parse("kubectl apply -f https://example.com/x.yaml", scratch, rules) is not None
    with pytest.raises(CommandRefusedError, match="URL"):
        parse("kubectl apply -f file:///etc/passwd", scratch, rules)
