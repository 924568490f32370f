//! Ground-truth circuits as head sets: ACDC's and the SAE paper repo's lists (embedded from
//! `data/ground_truth_heads.json`), or a user's JSON file.
//!
//! Heads are `(layer, head)`, sorted and deduplicated so two spellings of one circuit compare
//! equal. ACDC's Greater-Than circuit also contains MLPs 0–3 and 8–11; they are not heads, so
//! they are not in [`Circuit::heads`] (see [`builtin_mlp_layers`]).
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::words::GROUND_TRUTH_JSON;
use crate::error::{read_text, Error, Result};

/// A set of attention heads, e.g. a ground-truth circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Circuit {
    pub name: String,
    pub heads: Vec<(usize, usize)>,
    /// Optional edges of the computational graph, labelled as
    /// [`crate::model::graph::CircuitGraph::edge_label`] writes them (`"L0H1->L2H3.q"`,
    /// `"input->MLP0"`, `"MLP4->output"`); edge AUCs are computed where present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<String>,
}

/// Built-in names and their key in `ground_truth_heads.json`. The first name is canonical.
const BUILTINS: &[(&[&str], &str)] = &[
    (&["ioi", "ioi-acdc"], "ioi_gpt2_acdc"),
    (&["ioi-sae-repo"], "ioi_gpt2_sae_circuits_repo"),
    (
        &["gt", "greaterthan", "greater-than", "gt-acdc"],
        "greaterthan_gpt2_acdc",
    ),
    (
        &["gt-sae-repo", "greaterthan-sae-repo"],
        "greaterthan_gpt2_sae_circuits_repo",
    ),
    (
        &["docstring", "ds", "docstring-acdc"],
        "docstring_attn_only_4l_acdc_heads_in_37_edge_circuit",
    ),
    (
        &["docstring-sae-repo", "ds-sae-repo"],
        "docstring_sae_circuits_repo",
    ),
];

/// The canonical built-in circuit names.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(names, _)| names[0]).collect()
}

fn builtin_key(name: &str) -> Result<(&'static str, &'static str)> {
    let lower = name.trim().to_ascii_lowercase();
    BUILTINS
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
        .map(|(names, key)| (names[0], *key))
        .ok_or_else(|| {
            Error::Circuit(format!(
                "unknown built-in circuit `{name}` (known: {})",
                builtin_names().join(", ")
            ))
        })
}

/// Collect `[layer, head]` pairs from a JSON tree (arrays, or objects of groups); a `null`
/// head is that layer's MLP. Keys starting with `_` are comments.
fn collect(v: &Value, heads: &mut Vec<(usize, usize)>, mlps: &mut Vec<usize>) -> Result<()> {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if !k.starts_with('_') {
                    collect(v, heads, mlps)?;
                }
            }
        }
        Value::Array(items) => {
            for it in items {
                match it {
                    Value::Array(p) if p.len() == 2 => {
                        let layer = as_index(&p[0])?;
                        if p[1].is_null() {
                            mlps.push(layer);
                        } else {
                            heads.push((layer, as_index(&p[1])?));
                        }
                    }
                    other => collect(other, heads, mlps)?,
                }
            }
        }
        other => {
            return Err(Error::Circuit(format!(
                "expected [layer, head] pairs, found {other}"
            )))
        }
    }
    Ok(())
}

fn as_index(v: &Value) -> Result<usize> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| Error::Circuit(format!("`{v}` is not a layer/head index")))
}

fn builtin_value(key: &str) -> Result<Value> {
    let root: Value = serde_json::from_str(GROUND_TRUTH_JSON)?;
    root.get(key)
        .cloned()
        .ok_or_else(|| Error::Circuit(format!("embedded ground truth lacks `{key}`")))
}

/// MLP layers of a built-in circuit (only ACDC's Greater-Than has any), sorted.
pub fn builtin_mlp_layers(name: &str) -> Result<Vec<usize>> {
    let (_, key) = builtin_key(name)?;
    let (mut heads, mut mlps) = (Vec::new(), Vec::new());
    collect(&builtin_value(key)?, &mut heads, &mut mlps)?;
    mlps.sort_unstable();
    mlps.dedup();
    Ok(mlps)
}

/// Parse one head name: `"L9H6"`, `"a9.6"`, `"a9.h6"` or `"9.6"` (case-insensitive).
pub fn parse_head(s: &str) -> Result<(usize, usize)> {
    let t = s.trim().to_ascii_lowercase();
    let parts = if let Some(rest) = t.strip_prefix('l') {
        rest.split_once('h')
    } else {
        let rest = t.strip_prefix('a').unwrap_or(&t);
        rest.split_once('.')
            .map(|(l, h)| (l, h.strip_prefix('h').unwrap_or(h)))
    };
    let bad = || {
        Error::Circuit(format!(
            "cannot read head `{s}` (expected e.g. \"L9H6\", \"a9.6\", \"a9.h6\" or [9, 6])"
        ))
    };
    let (l, h) = parts.ok_or_else(bad)?;
    match (l.parse::<usize>(), h.parse::<usize>()) {
        (Ok(l), Ok(h)) => Ok((l, h)),
        _ => Err(bad()),
    }
}

impl Circuit {
    /// Build a circuit, sorting and deduplicating the heads.
    pub fn new(name: impl Into<String>, mut heads: Vec<(usize, usize)>) -> Self {
        heads.sort_unstable();
        heads.dedup();
        Circuit {
            name: name.into(),
            heads,
            edges: Vec::new(),
        }
    }

    /// A built-in circuit: `ioi`, `ioi-sae-repo`, `gt`/`greaterthan`, `gt-sae-repo`,
    /// `docstring`, `docstring-sae-repo`.
    pub fn builtin(name: &str) -> Result<Circuit> {
        let (canonical, key) = builtin_key(name)?;
        let (mut heads, mut mlps) = (Vec::new(), Vec::new());
        collect(&builtin_value(key)?, &mut heads, &mut mlps)?;
        Ok(Circuit::new(canonical, heads))
    }

    /// Parse a user circuit: a JSON array of `[layer, head]` pairs or head strings, an
    /// object `{"name": .., "heads": [..]}`, or a MIB graph file (EAP-IG's JSON, see
    /// [`crate::mib`]: its `in_graph` heads and edges). `name` is used when the JSON gives
    /// none.
    pub fn from_json_str(text: &str, name: &str) -> Result<Circuit> {
        Self::from_json_at(text, name, Path::new(name))
    }

    /// A MIB graph file's circuit: the heads whose node is `in_graph`, and the `in_graph`
    /// edges in our label format. Checked against a model where it is used
    /// ([`Circuit::validate`]); errors name `source`.
    fn from_mib(text: &str, name: &str, source: &Path) -> Result<Circuit> {
        let g = crate::mib::MibGraph::from_json(text, source)?;
        let heads = g.heads_in_graph();
        if heads.is_empty() {
            return Err(Error::format(
                source,
                "MIB graph with no head `in_graph` (a scores file? select a circuit from it first)",
            ));
        }
        let mut c = Circuit::new(name, heads);
        c.edges = g.edge_labels_in_graph();
        Ok(c)
    }

    fn from_json_at(text: &str, name: &str, source: &Path) -> Result<Circuit> {
        if crate::mib::is_mib_json(text) {
            return Self::from_mib(text, name, source);
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Circuit(format!("{name}: not JSON: {e}")))?;
        let mut edges = Vec::new();
        let (name, list) = match &v {
            Value::Array(_) => (name.to_string(), &v),
            Value::Object(map) => {
                if let Some(e) = map.get("edges") {
                    let arr = e
                        .as_array()
                        .ok_or_else(|| Error::Circuit(format!("{name}: `edges` is not a list")))?;
                    for (i, x) in arr.iter().enumerate() {
                        let s = x.as_str().filter(|s| s.contains("->")).ok_or_else(|| {
                            Error::Circuit(format!(
                                "{name}: edge {i} `{x}` is not a string like \"L0H1->L2H3.q\""
                            ))
                        })?;
                        edges.push(s.trim().to_string());
                    }
                }
                let list = map.get("heads").ok_or_else(|| {
                    Error::Circuit(format!("{name}: object without a `heads` list"))
                })?;
                let n = map
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_string();
                (n, list)
            }
            _ => {
                return Err(Error::Circuit(format!(
                    "{name}: expected a list of heads or {{\"heads\": [..]}}"
                )))
            }
        };
        let items = list
            .as_array()
            .ok_or_else(|| Error::Circuit(format!("{name}: `heads` is not a list")))?;
        let mut heads = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let head = match it {
                Value::String(s) => parse_head(s),
                Value::Array(p) if p.len() == 2 => {
                    as_index(&p[0]).and_then(|l| Ok((l, as_index(&p[1])?)))
                }
                other => Err(Error::Circuit(format!(
                    "`{other}` is not [layer, head] or a head name"
                ))),
            }
            .map_err(|e| Error::Circuit(format!("{name}: entry {i}: {e}")))?;
            heads.push(head);
        }
        if heads.is_empty() {
            return Err(Error::Circuit(format!("{name}: the circuit has no heads")));
        }
        let mut c = Circuit::new(name, heads);
        edges.sort();
        edges.dedup();
        c.edges = edges;
        Ok(c)
    }

    /// Read a user circuit file (see [`Circuit::from_json_str`]); named after the file stem.
    pub fn from_json_file(path: &Path) -> Result<Circuit> {
        let text = read_text(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "circuit".into());
        Circuit::from_json_at(&text, &stem, path).map_err(|e| match e {
            Error::Circuit(msg) => Error::format(path, msg),
            other => other,
        })
    }

    /// A built-in name, or else a path to a JSON file.
    pub fn load(spec: &str) -> Result<Circuit> {
        match Circuit::builtin(spec) {
            Ok(c) => Ok(c),
            Err(_) if Path::new(spec).exists() => Circuit::from_json_file(Path::new(spec)),
            Err(e) => Err(e),
        }
    }

    /// Error when a head lies outside an `n_layers` × `n_heads` model (e.g. an IOI circuit
    /// checked against a 4-layer model).
    pub fn validate(&self, n_layers: usize, n_heads: usize) -> Result<()> {
        if let Some(&(l, h)) = self
            .heads
            .iter()
            .find(|&&(l, h)| l >= n_layers || h >= n_heads)
        {
            return Err(Error::Circuit(format!(
                "{}: head L{l}H{h} is outside the model ({n_layers} layers × {n_heads} heads)",
                self.name
            )));
        }
        Ok(())
    }

    pub fn contains(&self, layer: usize, head: usize) -> bool {
        self.heads.binary_search(&(layer, head)).is_ok()
    }

    /// Layer-major membership mask of length `n_layers * n_heads` (index `l * n_heads + h`).
    /// Heads outside the grid are ignored; call [`Circuit::validate`] first to reject them.
    pub fn mask(&self, n_layers: usize, n_heads: usize) -> Vec<bool> {
        let mut m = vec![false; n_layers * n_heads];
        for &(l, h) in &self.heads {
            if l < n_layers && h < n_heads {
                m[l * n_heads + h] = true;
            }
        }
        m
    }
}
