"""`llmrouter import-litellm` on a realistic LiteLLM proxy config (several deployments per
model, Azure and Anthropic and Ollama and an unsupported provider, rpm weights, fallbacks,
retries, a master key): the TOML it prints is checked field by field, and `check-config`
accepts it."""

import os
import subprocess
import tempfile
import tomllib

from conftest import binary

LITELLM = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-prod
      api_base: https://example-eu.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
      rpm: 300
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: os.environ/ANTHROPIC_API_KEY
    model_info:
      max_input_tokens: 200000
      input_cost_per_token: 0.000003
      output_cost_per_token: 0.000015
  - model_name: local
    litellm_params:
      model: ollama_chat/llama3.1
      api_base: http://ollama:11434
  - model_name: titan
    litellm_params:
      model: bedrock/amazon.titan-text-express-v1
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 3
  timeout: 45
  fallbacks:
    - gpt-4o: ["claude"]
    - local: ["gpt-4o"]
  context_window_fallbacks:
    - gpt-4o: ["claude"]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""

ENV = dict(os.environ, OPENAI_API_KEY="sk-o", AZURE_API_KEY="az", ANTHROPIC_API_KEY="sk-a", LITELLM_MASTER_KEY="sk-master")


def run(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, env=ENV, timeout=30)


def test_a_realistic_litellm_config_imports_and_validates():
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "litellm_config.yaml")
        with open(src, "w") as f:
            f.write(LITELLM)
        out = run("import-litellm", src)
        assert out.returncode == 0, out.stderr
        cfg = tomllib.loads(out.stdout)
        by_type = {p["type"]: p for p in cfg["providers"]}
        assert set(by_type) == {"openai", "azure", "anthropic", "ollama"}
        assert by_type["openai"]["api_key_env"] == "OPENAI_API_KEY" and by_type["openai"]["models"] == ["gpt-4o"]
        assert by_type["azure"]["api_version"] == "2024-10-21"
        assert by_type["azure"]["base_url"] == "https://example-eu.openai.azure.com"
        assert by_type["anthropic"]["context_window"] == {"claude-sonnet-4-5": 200000}
        assert abs(by_type["anthropic"]["cost_input_per_mtok"] - 3.0) < 1e-9
        assert by_type["ollama"]["base_url"] == "http://ollama:11434"
        groups = {g["name"]: g for g in cfg["models"]}
        assert set(groups) == {"gpt-4o", "claude", "local"}
        assert groups["gpt-4o"]["strategy"] == "weighted"
        assert [t["weight"] for t in groups["gpt-4o"]["targets"]] == [600, 300]
        assert groups["gpt-4o"]["fallbacks"] == ["claude"] and groups["local"]["fallbacks"] == ["gpt-4o"]
        assert cfg["router"]["max_attempts"] == 4
        assert cfg["server"] == {"token": "${LITELLM_MASTER_KEY}", "request_timeout_ms": 45000}
        assert "bedrock" in out.stderr and "context_window_fallbacks" in out.stderr
        assert out.stdout.startswith("# Imported from") and "# not mapped: " in out.stdout
        dst = os.path.join(tmp, "llmrouter.toml")
        with open(dst, "w") as f:
            f.write(out.stdout)
        check = run("--config", dst, "check-config")
        assert check.returncode == 0, check.stderr
        assert "configuration is valid" in check.stdout


def test_an_unreadable_import_fails_clearly():
    out = run("import-litellm", "/nonexistent/litellm.yaml")
    assert out.returncode == 2 and "cannot read" in out.stderr
