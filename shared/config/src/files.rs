//! The data files a configuration points at, read at load time: prompt templates
//! (`templates.path`, one `NAME.txt` or `NAME.md` per template) and the model catalog
//! (`router.catalog`), whose context windows and per-token costs fill what providers leave
//! unset. A catalog is a JSON list of `{"model", "context_window" | "max_input_tokens",
//! "input_cost_per_token" | "input_cost_per_mtok", "output_cost_per_token" |
//! "output_cost_per_mtok"}`, or LiteLLM's `model_prices_and_context_window.json` (an object
//! keyed by model name, `provider/model` keys matched by their model part too).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ConfigError;
use crate::settings::Settings;

fn invalid(field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message,
    }
}

/// The field naming the catalog file.
const CATALOG: &str = "router.catalog";

/// What the catalog knows of one model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CatalogEntry {
    pub context_window: Option<u64>,
    /// Input and output prices per million tokens.
    pub cost: Option<(f64, f64)>,
}

fn per_mtok(v: &Value, per_token: &str, per_mtok: &str) -> Option<f64> {
    v[per_mtok]
        .as_f64()
        .or_else(|| v[per_token].as_f64().map(|c| c * 1_000_000.0))
}

fn entry(v: &Value) -> CatalogEntry {
    let input = per_mtok(v, "input_cost_per_token", "input_cost_per_mtok");
    let output = per_mtok(v, "output_cost_per_token", "output_cost_per_mtok");
    CatalogEntry {
        context_window: v["context_window"].as_u64().or(v["max_input_tokens"].as_u64()),
        cost: (input.is_some() || output.is_some()).then(|| (input.unwrap_or(0.0), output.unwrap_or(0.0))),
    }
}

/// A catalog's entries by model name (both `provider/model` and `model` for prefixed keys).
pub fn parse_catalog(v: &Value) -> Result<BTreeMap<String, CatalogEntry>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut add = |name: &str, e: CatalogEntry| {
        if let Some((_, model)) = name.split_once('/') {
            out.entry(model.to_owned()).or_insert(e);
        }
        out.insert(name.to_owned(), e);
    };
    match v {
        Value::Array(list) => {
            for (i, m) in list.iter().enumerate() {
                let name = m["model"]
                    .as_str()
                    .ok_or_else(|| invalid(CATALOG, format!("entry {i} has no `model` name")))?;
                add(name, entry(m));
            }
        }
        Value::Object(map) => {
            for (name, m) in map.iter().filter(|(k, _)| k.as_str() != "sample_spec") {
                add(name, entry(m));
            }
        }
        _ => {
            let message = "a catalog is a JSON list of models or an object keyed by model";
            return Err(invalid(CATALOG, message.into()));
        }
    }
    Ok(out)
}

/// Reads the catalog and fills every provider's unset context windows and prices.
fn apply_catalog(s: &mut Settings) -> Result<(), ConfigError> {
    if s.router.catalog.is_empty() {
        return Ok(());
    }
    let field = CATALOG;
    let text = std::fs::read_to_string(&s.router.catalog)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", s.router.catalog)))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| invalid(field, format!("not JSON: {e}")))?;
    let catalog = parse_catalog(&v)?;
    // Every model a provider serves: its own list and the group targets naming it.
    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &s.providers {
        served
            .entry(p.name.clone())
            .or_default()
            .extend(p.models.iter().cloned());
    }
    for g in &s.models {
        for t in &g.targets {
            served.entry(t.provider.clone()).or_default().push(t.model.clone());
        }
    }
    for p in &mut s.providers {
        for model in served.get(&p.name).into_iter().flatten() {
            let Some(e) = catalog.get(model) else { continue };
            if let Some(n) = e.context_window
                && !p.context_window.contains_key(model)
            {
                p.context_window.insert(model.clone(), n);
            }
            if let Some(c) = e.cost {
                p.catalog_costs.insert(model.clone(), c);
            }
        }
    }
    Ok(())
}

/// Reads every template of `templates.path` and checks that each one named (by groups and
/// text endpoints) exists.
fn load_templates(s: &mut Settings) -> Result<(), ConfigError> {
    let t = &mut s.templates;
    if !t.path.is_empty() {
        let dir = std::fs::read_dir(&t.path)
            .map_err(|e| invalid("templates.path", format!("cannot read {}: {e}", t.path)))?;
        for f in dir.flatten() {
            let path = f.path();
            let ext = path.extension().and_then(|e| e.to_str());
            if !matches!(ext, Some("txt" | "md")) {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("templates.path", format!("cannot read {}: {e}", path.display())))?;
            t.loaded.insert(name.to_owned(), text);
        }
    }
    let named = s
        .models
        .iter()
        .enumerate()
        .filter_map(|(i, g)| Some((format!("models[{i}].template"), g.template.clone()?)))
        .chain(
            s.text_endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("text_endpoints[{i}].template"), e.template.clone())),
        );
    for (field, name) in named {
        if !s.templates.loaded.contains_key(&name) {
            return Err(invalid(
                &field,
                format!(
                    "there is no template `{name}` in templates.path ({:?})",
                    s.templates.path
                ),
            ));
        }
    }
    Ok(())
}

/// Loads the files the settings point at.
pub fn load_files(s: &mut Settings) -> Result<(), ConfigError> {
    load_templates(s)?;
    apply_catalog(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_catalog_shapes_parse() {
        let list = json!([{"model": "gpt-x", "context_window": 1000, "input_cost_per_mtok": 2.0, "output_cost_per_mtok": 8.0}]);
        let c = parse_catalog(&list).unwrap();
        assert_eq!(c["gpt-x"].context_window, Some(1000));
        assert_eq!(c["gpt-x"].cost, Some((2.0, 8.0)));
        let litellm = json!({"sample_spec": {}, "anthropic/claude-x": {"max_input_tokens": 200000,
            "input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5}});
        let c = parse_catalog(&litellm).unwrap();
        assert_eq!(c["claude-x"].context_window, Some(200000));
        let (i, o) = c["anthropic/claude-x"].cost.unwrap();
        assert!((i - 3.0).abs() < 1e-9 && (o - 15.0).abs() < 1e-9);
        assert!(!c.contains_key("sample_spec"));
        assert!(parse_catalog(&json!("x")).is_err());
    }

    #[test]
    fn templates_fill_their_placeholders_and_name_the_missing_ones() {
        let mut t = crate::settings::Templates {
            path: String::new(),
            loaded: BTreeMap::new(),
        };
        t.loaded.insert(
            "tr".into(),
            "Into ##LANG## (##TONE##); keep ## and ##not a name## as they are.".into(),
        );
        let vars = BTreeMap::from([
            ("LANG".to_owned(), "German".to_owned()),
            ("TONE".to_owned(), "warm".to_owned()),
        ]);
        assert_eq!(
            t.fill("tr", &vars).unwrap(),
            "Into German (warm); keep ## and ##not a name## as they are."
        );
        let err = t.fill("tr", &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("LANG, TONE"), "{err}");
        assert!(t.fill("nope", &vars).is_err());
    }

    #[test]
    fn the_shipped_templates_load_and_fill() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates");
        let mut s = crate::load_from(None, Default::default()).unwrap();
        s.templates.path = dir.display().to_string();
        load_templates(&mut s).unwrap();
        let vars = BTreeMap::from(
            [("LANGUAGE", "German"), ("AUDIENCE", "child"), ("SENTENCES", "3")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        for name in ["translate", "simplify", "summarize"] {
            let text = s.templates.fill(name, &vars).unwrap();
            assert!(!text.contains("##"), "{name}: {text}");
        }
    }

    #[test]
    fn a_group_naming_a_missing_template_is_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("llmr-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), "A").unwrap();
        let file = dir.join("c.toml");
        let cfg = format!(
            "[templates]\npath = {:?}\n[[models]]\nname = 'g'\ntemplate = 'b'\ntargets = [{{provider = 'echo', model = 'echo'}}]\n",
            dir.display().to_string()
        );
        std::fs::write(&file, cfg).unwrap();
        let err = crate::load_from(Some(&file), Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("models[0].template"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
