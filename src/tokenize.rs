//! Tokenisers behind one trait: GPT-2 BPE (tiktoken-rs r50k_base), any Hugging Face
//! `tokenizer.json`, and the byte-level BPE vocabulary stored inside a GGUF file.
use std::path::Path;

use crate::error::{Error, Result};

/// What the engine needs from a tokeniser. `encode` never adds BOS; callers prepend
/// [`Tokenizer::bos_id`] when they want TransformerLens's `prepend_bos=True`.
pub trait Tokenizer: Send + Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// The token TransformerLens prepends (GPT-2: `<|endoftext|>`).
    fn bos_id(&self) -> Option<u32>;
    fn vocab_size(&self) -> usize;
    fn name(&self) -> &str;

    /// Encode with BOS prepended when `prepend_bos` and the tokenizer has one.
    fn encode_with_bos(&self, text: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if prepend_bos {
            if let Some(b) = self.bos_id() {
                ids.push(b);
            }
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The id of `text` when it is exactly one token, else `None`.
    fn single_token(&self, text: &str) -> Result<Option<u32>> {
        let ids = self.encode(text)?;
        Ok(if ids.len() == 1 { Some(ids[0]) } else { None })
    }
}

/// GPT-2's BPE (r50k_base is byte-identical to the gpt2 encoding).
pub struct Gpt2Tokenizer {
    bpe: tiktoken_rs::CoreBPE,
}

pub const GPT2_EOT: u32 = 50256;

impl Gpt2Tokenizer {
    pub fn new() -> Result<Self> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { bpe })
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.bpe.encode_with_special_tokens(text))
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.bpe
            .decode(ids)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
    fn bos_id(&self) -> Option<u32> {
        Some(GPT2_EOT)
    }
    fn vocab_size(&self) -> usize {
        50257
    }
    fn name(&self) -> &str {
        "gpt2 (tiktoken r50k_base)"
    }
}

/// A Hugging Face `tokenizers` tokenizer (from `tokenizer.json` or built from GGUF).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    name: String,
}

impl HfTokenizer {
    pub fn from_file(path: &Path, bos_token: Option<&str>) -> Result<Self> {
        let text = crate::error::read_text(path)?;
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| Error::format(path, format!("not a tokenizer.json: {e}")))?;
        Self::from_inner(inner, bos_token, path.display().to_string())
    }

    fn from_inner(
        inner: tokenizers::Tokenizer,
        bos_token: Option<&str>,
        name: String,
    ) -> Result<Self> {
        let bos = match bos_token {
            Some(t) => Some(inner.token_to_id(t).ok_or_else(|| {
                Error::Tokenizer(format!("{name}: BOS token {t:?} is not in the vocabulary"))
            })?),
            None => None,
        };
        Ok(Self { inner, bos, name })
    }

    /// Use `bos` (a token id) as BOS.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        if bos.is_some() {
            self.bos = bos;
        }
        self
    }

    /// Build a byte-level BPE tokenizer (GPT-2 style, as llama.cpp's `gpt2` tokenizer
    /// model) from a vocabulary and merges, e.g. those stored in a GGUF file.
    /// `pre` is llama.cpp's pre-tokenizer name; `smollm`, `llama-bpe`-free models split
    /// digits individually before the byte-level regex, as their `tokenizer.json` does.
    pub fn from_bpe_parts(
        tokens: &[String],
        merges: &[String],
        pre: &str,
        bos_id: Option<u32>,
        name: String,
    ) -> Result<Self> {
        use serde_json::json;
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            "gpt2" | "default" | "" => byte_level.clone(),
            other => {
                return Err(Error::Tokenizer(format!(
                    "{name}: unsupported GGUF pre-tokenizer {other:?} (supported: smollm, starcoder, gpt2)"
                )))
            }
        };
        // Special tokens (`<|...|>`) must be matched whole, before BPE.
        let added: Vec<_> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.starts_with("<|") && t.ends_with("|>"))
            .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| Error::Tokenizer(format!("{name}: building BPE from GGUF vocab: {e}")))?;
        let bos_tok = bos_id.and_then(|b| tokens.get(b as usize).cloned());
        Self::from_inner(inner, bos_tok.as_deref(), name)
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.name)))?;
        Ok(enc.get_ids().to_vec())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.name)))
    }
    fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Stands in for a model folder that ships no tokenizer: the model still runs on token
/// ids, and any attempt to tokenise text says what is missing.
pub struct MissingTokenizer {
    why: String,
}

impl MissingTokenizer {
    pub fn new(why: String) -> Self {
        Self { why }
    }
}

impl Tokenizer for MissingTokenizer {
    fn encode(&self, _text: &str) -> Result<Vec<u32>> {
        Err(Error::Tokenizer(self.why.clone()))
    }
    fn decode(&self, _ids: &[u32]) -> Result<String> {
        Err(Error::Tokenizer(self.why.clone()))
    }
    fn bos_id(&self) -> Option<u32> {
        None
    }
    fn vocab_size(&self) -> usize {
        0
    }
    fn name(&self) -> &str {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_known_ids() {
        let t = Gpt2Tokenizer::new().unwrap();
        assert_eq!(t.encode("Hello world").unwrap(), vec![15496, 995]);
        assert_eq!(t.encode("<|endoftext|>").unwrap(), vec![50256]);
        assert_eq!(t.encode(" the").unwrap(), vec![262]);
        assert_eq!(
            t.encode("When Mary and John went to the store, John gave a drink to")
                .unwrap(),
            vec![2215, 5335, 290, 1757, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 4144, 284]
        );
        assert_eq!(
            t.encode_with_bos("Hello world", true).unwrap(),
            vec![50256, 15496, 995]
        );
        assert_eq!(t.decode(&[15496, 995]).unwrap(), "Hello world");
    }

    #[test]
    fn tiny_bpe_from_parts() {
        // Byte-level alphabet: 'Ġ' is the space byte.
        let tokens: Vec<String> = ["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab", "1", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let merges = vec!["a b".to_string(), "Ġ ab".to_string()];
        let t = HfTokenizer::from_bpe_parts(&tokens, &merges, "smollm", Some(0), "tiny".into())
            .unwrap();
        assert_eq!(t.encode("ab ab").unwrap(), vec![4, 5]);
        assert_eq!(t.encode("12").unwrap(), vec![6, 7]);
        assert_eq!(t.encode("<|endoftext|>ab").unwrap(), vec![0, 4]);
        assert_eq!(t.bos_id(), Some(0));
        assert_eq!(t.decode(&[4, 5]).unwrap(), "ab ab");
    }
}
