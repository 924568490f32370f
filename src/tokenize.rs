//! Tokenisers behind one trait: GPT-2 BPE (tiktoken-rs r50k_base), any Hugging Face
//! `tokenizer.json`, and the vocabularies stored inside a GGUF file (byte-level BPE, and
//! SentencePiece-style "llama" vocabularies as in Gemma).
use std::collections::{BinaryHeap, HashMap};
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

    /// One token's text for display. A token that holds only part of a UTF-8 character
    /// (byte-level vocabularies split rare characters) cannot be decoded alone; it shows
    /// as its bytes, `<0xE6 0x97>`.
    fn display_piece(&self, id: u32) -> Result<String> {
        match self.piece_bytes(id) {
            Some(b) => Ok(String::from_utf8(b).unwrap_or_else(|e| {
                let hex: Vec<String> = e
                    .into_bytes()
                    .iter()
                    .map(|x| format!("0x{x:02X}"))
                    .collect();
                format!("<{}>", hex.join(" "))
            })),
            None => self.decode(&[id]),
        }
    }

    /// The raw bytes of one token, where the tokenizer can give them.
    fn piece_bytes(&self, _id: u32) -> Option<Vec<u8>> {
        None
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
    fn piece_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.bpe.decode_bytes(&[id]).ok()
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
        // tokenizers 0.22 panics on some malformed `decoder` objects (fuzzing found it).
        let inner: tokenizers::Tokenizer = crate::error::contain_panic(|| text.parse())
            .map_err(|p| Error::format(path, format!("not a tokenizer.json: {p}")))?
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
        // A regex split (llama.cpp's pattern for `pre`), then bytes without GPT-2's regex.
        let split = |re: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})
        };
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            // GPT-NeoX/Pythia's and OLMo's tokenizers use GPT-2's regex.
            "gpt2" | "gpt-2" | "olmo" | "default" | "" => byte_level.clone(),
            "qwen2" => split(QWEN2_SPLIT),
            "llama-bpe" | "llama3" => split(LLAMA3_SPLIT),
            other => {
                return Err(Error::Tokenizer(format!(
                    "{name}: unsupported GGUF pre-tokenizer {other:?} (supported: gpt2, olmo, \
                     smollm, starcoder, refact, qwen2, llama-bpe)"
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

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2` split (Qwen2 and Qwen2.5's tokenizer.json):
/// letters with one leading non-letter, single digits, punctuation runs, newlines.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// `LLAMA_VOCAB_PRE_TYPE_LLAMA3` (Llama 3.x): the same with digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer for HfTokenizer {
    // A tokenizer.json from a stranger can configure tokenizers' components so that they
    // panic (a `Strip` decoder longer than a token; fuzzing found it): contained as errors.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = crate::error::contain_panic(|| self.inner.encode(text, false))
            .map_err(|p| Error::Tokenizer(format!("{}: {p}", self.name)))?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.name)))?;
        Ok(enc.get_ids().to_vec())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        crate::error::contain_panic(|| self.inner.decode(ids, false))
            .map_err(|p| Error::Tokenizer(format!("{}: {p}", self.name)))?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.name)))
    }
    fn display_piece(&self, id: u32) -> Result<String> {
        // Part of a character decodes to U+FFFD (or fails): show the vocabulary's own
        // spelling of the token instead.
        let raw = || self.inner.id_to_token(id).map(|t| format!("<{t}>"));
        match self.decode(&[id]) {
            Ok(s) if s.contains('\u{FFFD}') => Ok(raw().unwrap_or(s)),
            Ok(s) => Ok(s),
            Err(e) => raw().ok_or(e),
        }
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

/// The SentencePiece-style tokenizer of GGUF files whose `tokenizer.ggml.model` is
/// `"llama"` (Llama 1/2, Gemma 1-3): llama.cpp's `llm_tokenizer_spm_session`, reproduced id
/// for id, since llama.cpp is the reference runtime for GGUF checkpoints.
///
/// Encoding, as llama.cpp's `tokenize(text, add_special=false, parse_special=false)`:
/// user-defined tokens (GGUF token type 4, e.g. Gemma's `"\n\n"` or `"<table>"`) are cut
/// out of the raw text first, longest first; each remaining piece gets the optional space
/// prefix, has its spaces replaced by `▁`, and is merged from single characters upwards,
/// always taking the adjacent pair whose joined text is the vocabulary token with the
/// highest score; characters the vocabulary lacks become `<0xXX>` byte tokens.
pub struct SpmTokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u8>,
    ids: HashMap<String, u32>,
    /// User-defined tokens split off before merging, longest text first.
    pre_split: Vec<u32>,
    /// The token for each byte (`<0xXX>`, else the byte as a one-character token).
    byte_ids: [Option<u32>; 256],
    bos: Option<u32>,
    add_space_prefix: bool,
    name: String,
}

// llama.cpp's token attributes (llama_token_attr), as bits.
const ATTR_NORMAL: u8 = 1;
const ATTR_UNKNOWN: u8 = 2;
const ATTR_UNUSED: u8 = 4;
const ATTR_CONTROL: u8 = 8;
const ATTR_USER_DEFINED: u8 = 16;
const ATTR_BYTE: u8 = 32;

/// Token texts that llama.cpp (llama-vocab.cpp, `load`) marks as control whatever their
/// GGUF type, as end-of-generation or fill-in-the-middle markers. Gemma 3's `</s>` is a
/// user-defined token that this turns into a control one, so plain text `</s>` is not
/// split off but spelled out. (llama.cpp marks only the first FIM spelling it meets when
/// the GGUF names no FIM id; vocabularies with two spellings of one FIM role differ.)
#[rustfmt::skip]
const LLAMA_CPP_CONTROL_TEXTS: &[&str] = &[
    // end of generation
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
    // fill in the middle
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>",
    "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>",
    "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>",
    "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
];

/// llama.cpp's per-token attributes: the GGUF type, then its by-name overrides.
fn llama_cpp_attrs(tokens: &[String], types: &[i32]) -> Vec<u8> {
    let mut attrs: Vec<u8> = types
        .iter()
        .map(|t| match t {
            1 => ATTR_NORMAL,
            2 => ATTR_UNKNOWN,
            3 => ATTR_CONTROL,
            4 => ATTR_USER_DEFINED,
            5 => ATTR_UNUSED,
            6 => ATTR_BYTE,
            _ => 0, // undefined: neither split off nor decoded
        })
        .collect();
    let has = |t: &str| tokens.iter().any(|x| x == t);
    for (a, t) in attrs.iter_mut().zip(tokens) {
        if LLAMA_CPP_CONTROL_TEXTS.contains(&t.as_str()) {
            *a |= ATTR_CONTROL;
        }
        // gpt-oss: always rendered.
        if ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"].contains(&t.as_str()) {
            *a = ATTR_USER_DEFINED;
        }
    }
    // o200k_harmony / solar-open: `<|end|>` is not an end marker there.
    if (has("<|return|>") && has("<|call|>") || has("<|calls|>") && has("<|flush|>"))
        && has("<|end|>")
    {
        for (a, t) in attrs.iter_mut().zip(tokens) {
            if t == "<|end|>" {
                *a = ATTR_USER_DEFINED;
            }
        }
    }
    // gemma4 / plamo: `</s>` is a normal token.
    if has("<|tool_response>") || has("<|plamo:eos|>") {
        for (a, t) in attrs.iter_mut().zip(tokens) {
            if t == "</s>" {
                *a = ATTR_NORMAL;
            }
        }
    }
    attrs
}

impl SpmTokenizer {
    /// Build from the GGUF keys `tokenizer.ggml.tokens`, `.scores`, `.token_type` (1 normal,
    /// 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), the BOS id and
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp's default when the key is absent: true).
    pub fn new(
        mut tokens: Vec<String>,
        scores: Vec<f32>,
        token_types: Vec<i32>,
        bos_id: Option<u32>,
        add_space_prefix: bool,
        name: String,
    ) -> Result<Self> {
        if tokens.is_empty() {
            return Err(Error::Tokenizer(format!("{name}: empty vocabulary")));
        }
        if scores.len() != tokens.len() || token_types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{name}: {} tokens but {} scores and {} token types",
                tokens.len(),
                scores.len(),
                token_types.len()
            )));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(Error::Tokenizer(format!("{name}: vocabulary too large")));
        }
        if let Some(b) = bos_id.filter(|&b| b as usize >= tokens.len()) {
            return Err(Error::Tokenizer(format!(
                "{name}: BOS id {b} is outside the vocabulary of {}",
                tokens.len()
            )));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                // llama.cpp's placeholder, so every id keeps a distinct text.
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(j) = ids.insert(t.clone(), i as u32) {
                return Err(Error::Tokenizer(format!(
                    "{name}: token {t:?} appears twice (ids {j} and {i})"
                )));
            }
        }
        let attrs = llama_cpp_attrs(&tokens, &token_types);
        // llama.cpp splits off user-defined tokens (control and unknown ones only with
        // parse_special), longest first; ties are unordered there, by id here.
        let mut pre_split: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                let a = attrs[i as usize];
                a & ATTR_USER_DEFINED != 0 && a & (ATTR_CONTROL | ATTR_UNKNOWN) == 0
            })
            .collect();
        pre_split.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                // llama.cpp falls back to the byte itself as a token.
                (b < 0x80)
                    .then(|| ids.get(&char::from(b as u8).to_string()).copied())
                    .flatten()
            });
        }
        Ok(Self {
            tokens,
            scores,
            attrs,
            ids,
            pre_split,
            byte_ids,
            bos: bos_id,
            add_space_prefix,
            name,
        })
    }

    /// The raw text is cut at user-defined tokens: `Ok(id)` for a token, `Err(range)` for
    /// text between them (never empty).
    fn split_user_defined(&self, text: &str) -> Vec<std::result::Result<u32, (usize, usize)>> {
        let mut frags = vec![Err((0, text.len()))];
        for &id in &self.pre_split {
            let needle = self.tokens[id as usize].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Err((a, b)) if text[*a..*b].contains(needle)))
            {
                continue;
            }
            let mut out = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let (mut a, b) = match f {
                    Err(r) => r,
                    tok => {
                        out.push(tok);
                        continue;
                    }
                };
                while let Some(m) = text[a..b].find(needle) {
                    if m > 0 {
                        out.push(Err((a, a + m)));
                    }
                    out.push(Ok(id));
                    a += m + needle.len();
                }
                if a < b {
                    out.push(Err((a, b)));
                }
            }
            frags = out;
        }
        frags
    }

    /// One piece of plain text (spaces already `▁`): llama.cpp's `llm_tokenizer_spm_session`.
    fn spm_session(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        struct Sym {
            start: usize,
            n: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl Ord for Bigram {
            // Highest score first; among equal scores the leftmost pair.
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.score
                    .partial_cmp(&o.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(o.left.cmp(&self.left))
            }
        }
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }

        let n_chars = text.chars().count();
        if n_chars == 0 {
            return Ok(());
        }
        let mut syms: Vec<Sym> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Sym {
                start,
                n: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n_chars).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        let try_add =
            |syms: &[Sym], queue: &mut BinaryHeap<Bigram>, l: Option<usize>, r: Option<usize>| {
                let (Some(l), Some(r)) = (l, r) else { return };
                let (start, size) = (syms[l].start, syms[l].n + syms[r].n);
                if let Some(&id) = self.ids.get(&text[start..start + size]) {
                    queue.push(Bigram {
                        score: self.scores[id as usize],
                        left: l,
                        right: r,
                        size,
                    });
                }
            };
        for i in 1..syms.len() {
            try_add(&syms, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (bg.left, bg.right);
            // Skip pairs whose symbols have since been merged into others.
            if syms[l].n == 0 || syms[r].n == 0 || syms[l].n + syms[r].n != bg.size {
                continue;
            }
            syms[l].n += syms[r].n;
            syms[r].n = 0;
            syms[l].next = syms[r].next;
            if let Some(nx) = syms[r].next {
                syms[nx].prev = Some(l);
            }
            let (prev, next) = (syms[l].prev, syms[l].next);
            try_add(&syms, &mut queue, prev, Some(l));
            try_add(&syms, &mut queue, Some(l), next);
        }
        // Resegment. llama.cpp would split a final symbol missing from the vocabulary
        // back along its recorded merges, but every merge it records forms a vocabulary
        // token, so such a symbol is always an unmerged character: spell it in bytes.
        let mut i = Some(0);
        while let Some(k) = i {
            let piece = &text[syms[k].start..syms[k].start + syms[k].n];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "{}: no byte token <0x{b:02X}> for {piece:?}",
                                self.name
                            ))
                        })?);
                    }
                }
            }
            i = syms[k].next;
        }
        Ok(())
    }

    /// Text of one token as llama.cpp's `token_to_piece(special=false)` renders it.
    fn piece(&self, id: u32, out: &mut Vec<u8>) {
        let (a, t) = (self.attrs[id as usize], self.tokens[id as usize].as_str());
        if a & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
            return;
        }
        if a & ATTR_USER_DEFINED != 0 {
            out.extend_from_slice(t.as_bytes());
        } else if a & ATTR_NORMAL != 0 {
            out.extend_from_slice(t.replace('▁', " ").as_bytes());
        } else if a & ATTR_BYTE != 0 {
            match t
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => out.push(b),
                None => out.extend_from_slice(t.as_bytes()),
            }
        }
    }
}

impl Tokenizer for SpmTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        // llama.cpp adds the space prefix at the start and after each split-off token.
        let mut prev_special = true;
        for frag in self.split_user_defined(text) {
            match frag {
                Ok(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Err((a, b)) => {
                    let mut piece = String::with_capacity(b - a + 3);
                    if self.add_space_prefix && prev_special {
                        piece.push(' ');
                    }
                    piece.push_str(&text[a..b]);
                    self.spm_session(&piece.replace(' ', "▁"), &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Control, unknown and unused tokens render as nothing; bytes are gathered before the
    /// UTF-8 decoding, so a character split over byte tokens survives (a lone part of one
    /// becomes U+FFFD).
    fn piece_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        if (id as usize) < self.tokens.len() {
            self.piece(id, &mut bytes);
            return Some(bytes);
        }
        None
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if id as usize >= self.tokens.len() {
                return Err(Error::Tokenizer(format!(
                    "{}: token id {id} is outside the vocabulary of {}",
                    self.name,
                    self.tokens.len()
                )));
            }
            let start = bytes.len();
            self.piece(id, &mut bytes);
            // llama.cpp drops the space prefix it would have added.
            if i == 0 && self.add_space_prefix && bytes.first() == Some(&b' ') {
                bytes.remove(start);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    fn vocab_size(&self) -> usize {
        self.tokens.len()
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

    /// Tokens holding part of a UTF-8 character display as bytes, not as an error.
    #[test]
    fn partial_characters_display_as_bytes() {
        let t = Gpt2Tokenizer::new().unwrap();
        let partial: Vec<u32> = (0..256).filter(|&i| t.decode(&[i]).is_err()).collect();
        assert!(!partial.is_empty());
        for id in partial {
            let p = t.display_piece(id).unwrap();
            assert!(p.starts_with("<0x") && p.ends_with('>'), "{id}: {p}");
        }
        assert_eq!(t.display_piece(64).unwrap(), "a");
        // A byte-level tokenizer.json: the vocabulary's spelling.
        let bytes: Vec<String> = ["a", "\u{e6}"].iter().map(|s| s.to_string()).collect();
        let h = HfTokenizer::from_bpe_parts(&bytes, &[], "gpt2", None, "t".into()).unwrap();
        assert_eq!(h.display_piece(0).unwrap(), "a");
        assert_eq!(h.display_piece(1).unwrap(), "<\u{e6}>");
    }

    /// The pre-tokenizers of `qwen2` and `llama-bpe` GGUFs split as those models'
    /// tokenizer.json files do (digits one by one, or in threes).
    #[test]
    fn gguf_pre_tokenizer_splits() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let pieces = |pre: &str, text: &str| -> Vec<String> {
            let tokens: Vec<String> = vec!["a".into()];
            let t = HfTokenizer::from_bpe_parts(&tokens, &[], pre, None, "t".into()).unwrap();
            let p = t.inner.get_pre_tokenizer().unwrap();
            let mut s = PreTokenizedString::from(text);
            p.pre_tokenize(&mut s).unwrap();
            s.get_splits(OffsetReferential::Original, OffsetType::Char)
                .into_iter()
                .map(|(_, (a, b), _)| text.chars().skip(a).take(b - a).collect())
                .collect()
        };
        let text = "It's 12345 apples!\n\nOK";
        assert_eq!(
            pieces("qwen2", text),
            ["It", "'s", " ", "1", "2", "3", "4", "5", " apples", "!\n\n", "OK"]
        );
        assert_eq!(
            pieces("llama-bpe", text),
            ["It", "'s", " ", "123", "45", " apples", "!\n\n", "OK"]
        );
        assert_eq!(
            pieces("gpt2", text),
            ["It", "'s", " 12345", " apples", "!", "\n", "\n", "OK"]
        );
        assert!(
            HfTokenizer::from_bpe_parts(&["a".into()], &[], "tekken", None, "t".into()).is_err()
        );
    }

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

    /// A hand-built SentencePiece vocabulary: (text, score, GGUF token type).
    fn tiny_spm(extra: &[(&str, f32, i32)], add_space_prefix: bool) -> SpmTokenizer {
        let mut v: Vec<(&str, f32, i32)> = vec![
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 4), // user-defined in the GGUF, control to llama.cpp
            ("▁", -1.0, 1),
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("c", -1.0, 1),
            ("▁a", -2.0, 1),
            ("<0xC3>", 0.0, 6),
            ("<0xA9>", 0.0, 6),
            ("<0x0A>", 0.0, 6),
            ("\n\n", 0.0, 4),
            ("<0x3C>", 0.0, 6),
            ("<0x2F>", 0.0, 6),
            ("s", -1.0, 1),
            ("<0x3E>", 0.0, 6),
        ];
        v.extend_from_slice(extra);
        SpmTokenizer::new(
            v.iter().map(|t| t.0.to_string()).collect(),
            v.iter().map(|t| t.1).collect(),
            v.iter().map(|t| t.2).collect(),
            Some(1),
            add_space_prefix,
            "tiny-spm".into(),
        )
        .unwrap()
    }

    fn id(t: &SpmTokenizer, text: &str) -> u32 {
        t.ids[text]
    }

    #[test]
    fn spm_merges_highest_score_first() {
        // "bc" outscores "ab": a + (bc).
        let t = tiny_spm(&[("ab", -5.0, 1), ("bc", -3.0, 1)], false);
        assert_eq!(t.encode("abc").unwrap(), vec![id(&t, "a"), id(&t, "bc")]);
        // The other way round: (ab) + c.
        let t = tiny_spm(&[("ab", -3.0, 1), ("bc", -5.0, 1)], false);
        assert_eq!(t.encode("abc").unwrap(), vec![id(&t, "ab"), id(&t, "c")]);
        // A merged pair merges on when the longer text is a token.
        let t = tiny_spm(&[("ab", -3.0, 1), ("bc", -5.0, 1), ("abc", -9.0, 1)], false);
        assert_eq!(t.encode("abc").unwrap(), vec![id(&t, "abc")]);
        // Spaces become ▁ and merge like any character.
        assert_eq!(
            t.encode(" a b").unwrap(),
            vec![id(&t, "▁a"), id(&t, "▁"), id(&t, "b")]
        );
        assert_eq!(t.decode(&t.encode(" a b").unwrap()).unwrap(), " a b");
    }

    #[test]
    fn spm_equal_scores_merge_leftmost_first() {
        let t = tiny_spm(&[("ab", -4.0, 1), ("bc", -4.0, 1)], false);
        assert_eq!(t.encode("abc").unwrap(), vec![id(&t, "ab"), id(&t, "c")]);
        assert_eq!(
            t.encode("abcabc").unwrap(),
            vec![id(&t, "ab"), id(&t, "c"), id(&t, "ab"), id(&t, "c")]
        );
    }

    #[test]
    fn spm_byte_fallback_and_partial_utf8_decode() {
        let t = tiny_spm(&[], false);
        let (c3, a9) = (id(&t, "<0xC3>"), id(&t, "<0xA9>"));
        assert_eq!(t.encode("é").unwrap(), vec![c3, a9]);
        assert_eq!(
            t.encode("a\n").unwrap(),
            vec![id(&t, "a"), id(&t, "<0x0A>")]
        );
        assert_eq!(t.decode(&[c3, a9]).unwrap(), "é");
        // Half a character: no error, a replacement character.
        assert_eq!(t.decode(&[id(&t, "a"), c3]).unwrap(), "a\u{FFFD}");
        // A character with no byte token at all is an error naming it.
        let e = t.encode("ß").unwrap_err().to_string();
        assert!(e.contains("tiny-spm") && e.contains("ß"), "{e}");
        assert!(t.decode(&[999]).is_err());
    }

    #[test]
    fn spm_user_defined_tokens_split_first() {
        let t = tiny_spm(&[], false);
        let nn = id(&t, "\n\n");
        assert_eq!(
            t.encode("a\n\nb").unwrap(),
            vec![id(&t, "a"), nn, id(&t, "b")]
        );
        // Three newlines: the pair, then one byte.
        assert_eq!(t.encode("\n\n\n").unwrap(), vec![nn, id(&t, "<0x0A>")]);
        assert_eq!(t.decode(&[nn]).unwrap(), "\n\n");
        // `</s>` is control to llama.cpp: spelled out, and rendered as nothing.
        let ids = t.encode("</s>").unwrap();
        assert!(!ids.contains(&id(&t, "</s>")), "{ids:?}");
        assert_eq!(t.decode(&ids).unwrap(), "</s>");
        assert_eq!(t.decode(&[id(&t, "</s>"), 1, 0, id(&t, "a")]).unwrap(), "a");
        assert_eq!(t.encode_with_bos("a", true).unwrap(), vec![1, id(&t, "a")]);
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn spm_space_prefix() {
        let t = tiny_spm(&[], true);
        assert_eq!(t.encode("a").unwrap(), vec![id(&t, "▁a")]);
        // Again after a split-off token, as in llama.cpp.
        assert_eq!(
            t.encode("\n\na").unwrap(),
            vec![id(&t, "\n\n"), id(&t, "▁a")]
        );
        assert_eq!(t.decode(&[id(&t, "▁a"), id(&t, "▁a")]).unwrap(), "a a");
    }

    #[test]
    fn spm_rejects_bad_vocabularies() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = SpmTokenizer::new(
            s(&["a", "b"]),
            vec![0.0],
            vec![1, 1],
            None,
            false,
            "v".into(),
        );
        assert!(e.is_err());
        assert!(SpmTokenizer::new(vec![], vec![], vec![], None, false, "v".into()).is_err());
        let e = SpmTokenizer::new(
            s(&["a", "a"]),
            vec![0.0; 2],
            vec![1; 2],
            None,
            false,
            "v".into(),
        );
        assert!(e.err().unwrap().to_string().contains("twice"));
        let e = SpmTokenizer::new(s(&["a"]), vec![0.0], vec![1], Some(5), false, "v".into());
        assert!(e.is_err());
    }
}
