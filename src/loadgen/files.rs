//! File datasets: `sharegpt` (vLLM's `ShareGPTDataset`) and `custom` (`CustomDataset`, plus
//! chat message lists).
//!
//! vLLM's rules, reproduced so the same file and seed give the same prompts as
//! `vllm bench serve`: entries with fewer than two turns are dropped; the rest are shuffled with
//! Python's `random.seed(seed); random.shuffle(data)`; then, in that order, the first
//! `num_prompts` that pass `is_valid_sequence` are taken (ShareGPT: prompt and reply tokens, with
//! the tokenizer's special tokens, at least 4; prompt at most 1024 and both at most 2048; a fixed
//! output length skips the reply check); too few → `random.seed(seed)` and `random.choice`
//! draws to fill up (vLLM's oversampling).
//!
//! Memory: a file is never held. One streaming pass indexes its records (byte offset and
//! length of each ShareGPT entry with two turns or more, of each non-blank JSONL line); Python's
//! shuffle depends only on the list's length, so the index is shuffled, and records are then
//! read one by one in that order, only as many as the sample needs (1 GB: ~1 s, ~30 MB). `plan` does not parse the file at all: [`check_dataset_file`]
//! reads its first record, and [`dataset_file_hash`] streams it through blake3.
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

use super::LoadgenError;
use super::dataset::{ChatMessage, Dataset, DatasetConfig, SampleRequest, TokenizerInfo, Workload};
use super::pyrandom::PyRandom;

/// vLLM's `is_valid_sequence` defaults.
const MIN_LEN: usize = 4;
const MAX_PROMPT_LEN: usize = 1024;
const MAX_TOTAL_LEN: usize = 2048;

/// One conversation: (speaker, text) turns as written (`human`/`gpt`, or chat roles).
type Conversation = Vec<(String, String)>;

pub(crate) fn build_file_dataset(
    cfg: &DatasetConfig,
    tokenizer: Option<(PathBuf, Tokenizer)>,
) -> Result<Dataset, LoadgenError> {
    let (path, output_len, multi_turn, sharegpt) = match &cfg.workload {
        Workload::Sharegpt {
            path,
            output_len,
            multi_turn,
        } => (path, *output_len, *multi_turn, true),
        Workload::Custom {
            path,
            output_len,
            multi_turn,
        } => (path, *output_len, *multi_turn, false),
        _ => unreachable!("called for file datasets only"),
    };
    let tok = tokenizer.as_ref().map(|(_, t)| t);
    let requests = if sharegpt {
        let tok = tok.ok_or_else(|| {
            LoadgenError::Tokenizer(
                "the sharegpt dataset needs the model's tokenizer (its length filter counts tokens); \
                 give `models.<key>.tokenizer`"
                    .into(),
            )
        })?;
        let mut index = index_sharegpt(path)?;
        PyRandom::new(cfg.seed).shuffle(&mut index);
        let keep = if multi_turn { Keep::All } else { Keep::Two };
        let mut reader = EntryReader::open(path)?;
        let entries = index.iter().map(|&at| reader.read(at, keep));
        sample_sharegpt(entries, tok, cfg, output_len, multi_turn)?
    } else {
        let mut index = index_lines(path)?;
        PyRandom::new(cfg.seed).shuffle(&mut index);
        let mut reader = EntryReader::open(path)?;
        let records = index.iter().map(|&at| read_custom_record(&mut reader, at));
        sample_custom(records, tok, cfg.num_prompts, output_len, multi_turn, path)?
    };
    if requests.is_empty() {
        return Err(LoadgenError::Config(format!(
            "{}: no record passes the dataset's length rules",
            path.display()
        )));
    }
    let requests = oversample(requests, cfg.num_prompts, cfg.seed);
    Ok(Dataset {
        config: cfg.clone(),
        requests,
        synthetic: tokenizer.is_none(),
        tokenizer: tokenizer.as_ref().map(|(p, t)| TokenizerInfo {
            path: p.clone(),
            vocab_size: t.get_vocab_size(false),
            ids_excluded: 0,
            num_special_tokens_to_add: super::dataset::num_special_tokens(t),
        }),
        residual_mismatch: 0,
        mismatched_prompts: 0,
        tokenizer_handle: tokenizer.map(|(_, t)| Arc::new(t)),
        extra_body: None,
    })
}

/// vLLM's `maybe_oversample_requests`: `random.seed(seed)`, then `random.choice` per missing one.
fn oversample(mut requests: Vec<SampleRequest>, n: usize, seed: u64) -> Vec<SampleRequest> {
    if requests.len() < n {
        let mut rng = PyRandom::new(seed);
        let have = requests.len();
        for _ in have..n {
            let pick = requests[rng.randbelow(have)].clone();
            requests.push(pick);
        }
    }
    requests.truncate(n);
    requests
}

fn encode_len(tok: &Tokenizer, text: &str) -> Result<usize, LoadgenError> {
    // `tokenizer(text).input_ids` in vLLM: special tokens included.
    tok.encode_fast(text, true)
        .map(|e| e.len())
        .map_err(|e| LoadgenError::Tokenizer(e.to_string()))
}

fn is_valid_sequence(prompt: usize, output: usize, skip_output_check: bool) -> bool {
    !(prompt < MIN_LEN
        || (!skip_output_check && output < MIN_LEN)
        || prompt > MAX_PROMPT_LEN
        || prompt + output > MAX_TOTAL_LEN)
}

fn chat_role(speaker: &str) -> &str {
    match speaker {
        "human" | "user" => "user",
        "gpt" | "chatgpt" | "bard" | "bing" | "assistant" | "model" => "assistant",
        "system" => "system",
        other => other,
    }
}

/// Takes conversations in (shuffled) order until `num_prompts` requests pass; reads no further.
fn sample_sharegpt(
    entries: impl Iterator<Item = Result<Conversation, LoadgenError>>,
    tok: &Tokenizer,
    cfg: &DatasetConfig,
    fixed_output: Option<u32>,
    multi_turn: bool,
) -> Result<Vec<SampleRequest>, LoadgenError> {
    let mut out = Vec::with_capacity(cfg.num_prompts);
    for conv in entries {
        if out.len() >= cfg.num_prompts {
            break;
        }
        let conv = conv?;
        let prompt_len = encode_len(tok, &conv[0].1)?;
        let reply_len = match fixed_output {
            Some(n) => n as usize,
            None => encode_len(tok, &conv[1].1)?,
        };
        if !is_valid_sequence(prompt_len, reply_len, fixed_output.is_some()) {
            continue;
        }
        if !multi_turn {
            let (p, o) = (prompt_len as u32, reply_len as u32);
            out.push(SampleRequest::text(conv[0].1.clone(), Some(p), p, o));
            continue;
        }
        // One request per user turn, the history (with the recorded replies) re-sent.
        let messages: Vec<ChatMessage> = conv
            .iter()
            .map(|(who, text)| ChatMessage {
                role: chat_role(who).to_string(),
                content: text.clone(),
            })
            .collect();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "user" {
                continue;
            }
            let output = match (fixed_output, messages.get(i + 1)) {
                (Some(n), _) => n,
                (None, Some(reply)) => encode_len(tok, &reply.content)? as u32,
                (None, None) => continue,
            };
            out.push(multi_turn_request(&messages[..=i], output.max(1)));
        }
    }
    Ok(out)
}

fn multi_turn_request(history: &[ChatMessage], output_len: u32) -> SampleRequest {
    let last = history
        .last()
        .map(|m| m.content.clone())
        .unwrap_or_default();
    SampleRequest {
        prompt: last,
        prompt_len: None,
        target_prompt_len: 0,
        output_len,
        messages: Some(history.to_vec()),
    }
}

/// A `custom` record: a prompt or a message list, and its output length if given.
#[derive(Debug, Clone, PartialEq)]
struct CustomRecord {
    prompt: CustomPrompt,
    output_tokens: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
enum CustomPrompt {
    Text(String),
    Messages(Vec<ChatMessage>),
}

#[derive(serde::Deserialize)]
struct RawCustom {
    #[serde(default)]
    prompt: Option<CustomPrompt>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// Parses one JSONL line; the error says what a record must hold.
fn parse_custom_line(line: &str) -> Result<CustomRecord, String> {
    let raw: RawCustom = serde_json::from_str(line).map_err(|e| {
        format!(
            "{e} (a record is {{\"prompt\": \"…\" or [{{\"role\", \"content\"}}…], \"output_tokens\": n}})"
        )
    })?;
    let prompt = match (raw.prompt, raw.messages) {
        (Some(p), None) => p,
        (None, Some(m)) => CustomPrompt::Messages(m),
        (Some(_), Some(_)) => return Err("a record has `prompt` or `messages`, not both".into()),
        (None, None) => return Err("the record has no `prompt` (or `messages`)".into()),
    };
    if matches!(&prompt, CustomPrompt::Messages(m) if m.is_empty()) {
        return Err("the record's message list is empty".into());
    }
    Ok(CustomRecord {
        prompt,
        output_tokens: raw.output_tokens,
    })
}

/// The non-blank lines of a JSONL file: (byte offset, length, line number). Like the ShareGPT
/// index, only positions are held; the records are parsed when sampled.
fn index_lines(path: &Path) -> Result<Vec<(u64, u32, usize)>, LoadgenError> {
    let mut reader = BufReader::with_capacity(1 << 20, open(path)?);
    let (mut out, mut pos, mut line_no) = (Vec::new(), 0u64, 0usize);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok(out);
        }
        line_no += 1;
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push((pos, n as u32, line_no));
        }
        pos += n as u64;
    }
}

/// The record at one indexed line.
fn read_custom_record(
    reader: &mut EntryReader,
    (offset, len, line_no): (u64, u32, usize),
) -> Result<CustomRecord, LoadgenError> {
    let bytes = reader.bytes((offset, len))?;
    let text = String::from_utf8_lossy(bytes);
    parse_custom_line(&text)
        .map_err(|e| LoadgenError::Config(format!("{}:{line_no}: {e}", reader.path.display())))
}

fn sample_custom(
    data: impl Iterator<Item = Result<CustomRecord, LoadgenError>>,
    tok: Option<&Tokenizer>,
    n: usize,
    fixed_output: Option<u32>,
    multi_turn: bool,
    path: &Path,
) -> Result<Vec<SampleRequest>, LoadgenError> {
    let mut out = Vec::with_capacity(n);
    for record in data {
        if out.len() >= n {
            break;
        }
        let record = record?;
        let output = fixed_output.or(record.output_tokens).ok_or_else(|| {
            LoadgenError::Config(format!(
                "{}: a record has no `output_tokens`; give it one or set `dataset.output_len`",
                path.display()
            ))
        })?;
        match record.prompt {
            CustomPrompt::Text(prompt) => {
                let len = tok.map(|t| encode_len(t, &prompt)).transpose()?;
                let len = len.map(|l| l as u32);
                out.push(SampleRequest::text(prompt, len, len.unwrap_or(0), output));
            }
            CustomPrompt::Messages(messages) if multi_turn => {
                for (i, m) in messages.iter().enumerate() {
                    if m.role == "user" {
                        out.push(multi_turn_request(&messages[..=i], output));
                    }
                }
            }
            CustomPrompt::Messages(messages) => out.push(multi_turn_request(&messages, output)),
        }
    }
    Ok(out)
}

fn open(path: &Path) -> Result<std::fs::File, LoadgenError> {
    std::fs::File::open(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> LoadgenError {
    LoadgenError::Config(format!("dataset {}: {e}", path.display()))
}

/// Where each kept entry of a ShareGPT JSON array lies in the file: (byte offset, length) of
/// the entries with at least two turns (vLLM's filter before shuffling). Python's shuffle
/// depends only on the list's length, so shuffling these gives vLLM's order without holding
/// any text: the entries are read one by one afterwards, only as many as the sample needs.
fn index_sharegpt(path: &Path) -> Result<Vec<(u64, u32)>, LoadgenError> {
    let mut index = Vec::new();
    let mut n = 0usize;
    scan_array(open(path)?, |offset, bytes| {
        n += 1;
        let turns = EntrySeed(Keep::Count)
            .deserialize(&mut serde_json::Deserializer::from_slice(bytes))
            .map_err(|e| {
                LoadgenError::Config(format!(
                    "{}: entry {n} (byte {offset}): {e}",
                    path.display()
                ))
            })?;
        if turns.is_some_and(|t| t.len() >= 2) {
            index.push((offset, bytes.len() as u32));
        }
        Ok(())
    })
    .map_err(|e| match e {
        ScanError::Io(e) => io_error(path, e),
        ScanError::Syntax(m) => LoadgenError::Config(format!("{}: {m}", path.display())),
        ScanError::Entry(e) => e,
    })?;
    Ok(index)
}

enum ScanError {
    Io(std::io::Error),
    Syntax(String),
    Entry(LoadgenError),
}

impl From<LoadgenError> for ScanError {
    fn from(e: LoadgenError) -> Self {
        ScanError::Entry(e)
    }
}

/// Splits a top-level JSON array into its elements' bytes (tracking strings, escapes and
/// nesting only; each element is parsed by the caller), one element in memory at a time.
fn scan_array(
    file: std::fs::File,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), LoadgenError>,
) -> Result<(), ScanError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut pos, mut depth, mut in_string, mut escape) = (0u64, 0usize, false, false);
    let mut element: Vec<u8> = Vec::new();
    let mut start = 0u64;
    loop {
        let buf = reader.fill_buf().map_err(ScanError::Io)?;
        if buf.is_empty() {
            return Err(ScanError::Syntax("the JSON array is not closed".into()));
        }
        let len = buf.len();
        let mut i = 0;
        while i < len {
            if in_string {
                // String content is most of a ShareGPT file: jump to its next quote or escape.
                if escape {
                    element.push(buf[i]);
                    escape = false;
                    i += 1;
                    continue;
                }
                let Some(k) = memchr::memchr2(b'"', b'\\', &buf[i..]) else {
                    element.extend_from_slice(&buf[i..]);
                    i = len;
                    continue;
                };
                element.extend_from_slice(&buf[i..=i + k]);
                match buf[i + k] {
                    b'"' => in_string = false,
                    _ => escape = true,
                }
                i += k + 1;
                continue;
            }
            let (at, c) = (pos + i as u64, buf[i]);
            i += 1;
            match (depth, c) {
                (_, b' ' | b'\n' | b'\r' | b'\t') if depth <= 1 => {}
                (0, b'[') => depth = 1,
                (0, _) => {
                    return Err(ScanError::Syntax(format!(
                        "not a JSON array of ShareGPT entries (byte {at})"
                    )));
                }
                (1, b',' | b']') => {
                    if !element.is_empty() {
                        each(start, &element)?;
                        element.clear();
                    }
                    if c == b']' {
                        return Ok(());
                    }
                }
                _ => {
                    if element.is_empty() {
                        start = at;
                    }
                    match c {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    element.push(c);
                }
            }
        }
        pos += len as u64;
        reader.consume(len);
    }
}

/// Reads single entries (ShareGPT) or lines (JSONL) of a dataset file by their byte range.
struct EntryReader {
    file: std::fs::File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl EntryReader {
    fn open(path: &Path) -> Result<EntryReader, LoadgenError> {
        Ok(EntryReader {
            file: open(path)?,
            path: path.to_path_buf(),
            buf: Vec::new(),
        })
    }

    fn bytes(&mut self, (offset, len): (u64, u32)) -> Result<&[u8], LoadgenError> {
        use std::io::{Seek, SeekFrom};
        self.buf.resize(len as usize, 0);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut self.buf))
            .map_err(|e| io_error(&self.path, e))?;
        Ok(&self.buf)
    }

    fn read(
        &mut self,
        (offset, len): (u64, u32),
        keep: Keep,
    ) -> Result<Conversation, LoadgenError> {
        self.bytes((offset, len))?;
        let turns = EntrySeed(keep)
            .deserialize(&mut serde_json::Deserializer::from_slice(&self.buf))
            .map_err(|e| {
                LoadgenError::Config(format!("{} (byte {offset}): {e}", self.path.display()))
            })?;
        Ok(turns.unwrap_or_default())
    }
}

/// Which turns of a conversation are kept.
#[derive(Clone, Copy)]
enum Keep {
    /// None: only counted (empty placeholders), for the index.
    Count,
    Two,
    All,
}

/// The top-level array; `first_only` stops after the first entry (the plan-time check).
struct EntriesSeed {
    keep_all: bool,
    first_only: bool,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Vec<Conversation>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed {
    type Value = Vec<Conversation>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a JSON array of ShareGPT entries ({\"conversations\": [{\"from\", \"value\"}…]})",
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let keep = if self.keep_all { Keep::All } else { Keep::Two };
        while let Some(turns) = seq.next_element_seed(EntrySeed(keep))? {
            let first = turns.is_some();
            if let Some(turns) = turns.filter(|t| t.len() >= 2) {
                out.push(turns);
            }
            if self.first_only {
                if !first {
                    return Err(de::Error::custom("the first entry has no `conversations`"));
                }
                // Stop reading: the caller only wanted the first entry.
                return Err(de::Error::custom(FIRST_DONE));
            }
        }
        Ok(out)
    }
}

const FIRST_DONE: &str = "isobench: first entry read";

/// One entry: its `conversations` (None when absent), other fields skipped.
struct EntrySeed(Keep);

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Option<Conversation>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = Option<Conversation>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a ShareGPT entry (an object with `conversations`)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut conv = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "conversations" {
                conv = Some(map.next_value_seed(TurnsSeed(self.0))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(conv)
    }
}

/// The turns: all of them, the first two (the rest skipped, not kept), or none (counted).
struct TurnsSeed(Keep);

#[derive(serde::Deserialize)]
struct Turn {
    #[serde(default)]
    from: String,
    value: String,
}

impl<'de> DeserializeSeed<'de> for TurnsSeed {
    type Value = Conversation;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TurnsSeed {
    type Value = Conversation;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of turns ({\"from\": \"human\", \"value\": \"…\"})")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut turns = Vec::new();
        loop {
            let keep = match self.0 {
                Keep::Count => false,
                Keep::Two => turns.len() < 2,
                Keep::All => true,
            };
            if keep {
                match seq.next_element::<Turn>()? {
                    Some(t) => turns.push((t.from, t.value)),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_some() {
                if matches!(self.0, Keep::Count) {
                    turns.push((String::new(), String::new()));
                }
            } else {
                break;
            }
        }
        Ok(turns)
    }
}

/// The plan-time check of a dataset file: it opens, and its first record is well-formed
/// (ShareGPT: a JSON array whose first entry has `conversations` of `{"value": "…"}` turns;
/// custom: a JSON object with `prompt` or `messages`, and `output_tokens` unless the output
/// length is fixed). Reads only as far as the first record.
pub fn check_dataset_file(workload: &Workload) -> Result<(), String> {
    let Some(path) = workload.path() else {
        return Ok(());
    };
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "{} is a directory, not a dataset file",
            path.display()
        ));
    }
    match workload {
        Workload::Sharegpt { .. } => {
            let mut de = serde_json::Deserializer::from_reader(BufReader::new(file));
            let seed = EntriesSeed {
                keep_all: false,
                first_only: true,
            };
            match seed.deserialize(&mut de) {
                Err(e) if e.to_string().starts_with(FIRST_DONE) => Ok(()),
                Err(e) => Err(format!("{} is not a ShareGPT file: {e}", path.display())),
                Ok(_) => Err(format!("{} holds no entries", path.display())),
            }
        }
        Workload::Custom { output_len, .. } => {
            let mut lines = BufReader::new(file).lines().enumerate();
            let (i, line) = loop {
                match lines.next() {
                    None => return Err(format!("{} holds no records", path.display())),
                    Some((i, Ok(l))) if !l.trim().is_empty() => break (i, l),
                    Some((_, Ok(_))) => {}
                    Some((_, Err(e))) => return Err(format!("{}: {e}", path.display())),
                }
            };
            let record = parse_custom_line(&line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            if output_len.is_none() && record.output_tokens.is_none() {
                return Err(format!(
                    "{}:{}: the record has no `output_tokens` and `dataset.output_len` is not set",
                    path.display(),
                    i + 1
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// blake3 of a dataset file's content, streamed (1 MiB reads) and remembered per
/// (path, size, mtime) so a campaign whose commits share one file hashes it once.
pub fn dataset_file_hash(path: &Path) -> std::io::Result<String> {
    type Stamp = (PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: Mutex<Vec<(Stamp, String)>> = Mutex::new(Vec::new());
    let meta = std::fs::metadata(path)?;
    let stamp: Stamp = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some((_, h)) = CACHE.lock().unwrap().iter().find(|(s, _)| *s == stamp) {
        return Ok(h.clone());
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = hasher.finalize().to_hex().to_string();
    CACHE.lock().unwrap().push((stamp, hex.clone()));
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn sharegpt_reader_keeps_two_turns_and_drops_short_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "s.json",
            r#"[{"id": "a", "conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "r1"}, {"from": "human", "value": "q2"}]},
                {"id": "b", "conversations": [{"from": "human", "value": "only"}]},
                {"id": "c"},
                {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r", "x": 1}]}]"#,
        );
        let index = index_sharegpt(&p).unwrap();
        assert_eq!(
            index.len(),
            2,
            "entries b (one turn) and c (none) are dropped"
        );
        let mut reader = EntryReader::open(&p).unwrap();
        let two = reader.read(index[0], Keep::Two).unwrap();
        assert_eq!(
            two,
            [("human".into(), "q1".into()), ("gpt".into(), "r1".into())]
        );
        assert_eq!(reader.read(index[0], Keep::All).unwrap().len(), 3);
        let last = reader.read(index[1], Keep::Two).unwrap();
        assert_eq!(last[1], ("gpt".into(), "r".into()));
        // Strings holding the scanner's delimiters do not confuse it.
        let tricky = write(
            dir.path(),
            "tricky.json",
            r#" [ {"conversations": [{"value": "a], {\"b\": [1,"}, {"value": "\\"}]} , {"conversations": []}]"#,
        );
        let index = index_sharegpt(&tricky).unwrap();
        assert_eq!(index.len(), 1);
        let turns = EntryReader::open(&tricky)
            .unwrap()
            .read(index[0], Keep::Two)
            .unwrap();
        assert_eq!(turns[0].1, "a], {\"b\": [1,");
        assert_eq!(turns[1].1, "\\");
        let open_end = write(dir.path(), "open.json", r#"[{"conversations": []}"#);
        assert!(index_sharegpt(&open_end).is_err());
        assert!(check_dataset_file(&sharegpt(&p)).is_ok());
        let bad = write(dir.path(), "bad.json", r#"{"conversations": []}"#);
        let e = check_dataset_file(&sharegpt(&bad)).unwrap_err();
        assert!(e.contains("not a ShareGPT file"), "{e}");
        let bad_turn = write(
            dir.path(),
            "t.json",
            r#"[{"conversations": [{"from": "human"}]}]"#,
        );
        let e = check_dataset_file(&sharegpt(&bad_turn)).unwrap_err();
        assert!(e.contains("missing field `value`"), "{e}");
    }

    fn sharegpt(p: &Path) -> Workload {
        Workload::Sharegpt {
            path: p.into(),
            output_len: None,
            multi_turn: false,
        }
    }

    fn custom(p: &Path, output_len: Option<u32>, multi_turn: bool) -> DatasetConfig {
        DatasetConfig {
            num_prompts: 3,
            seed: 1,
            workload: Workload::Custom {
                path: p.into(),
                output_len,
                multi_turn,
            },
            ..DatasetConfig::default()
        }
    }

    #[test]
    fn custom_records_prompts_messages_and_output_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"prompt\": \"a\", \"output_tokens\": 5}\n\n{\"prompt\": \"b\", \"output_tokens\": 6}\n\
             {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}, {\"role\": \"user\", \"content\": \"more\"}], \"output_tokens\": 7}\n",
        );
        let ds = super::super::build_dataset(&custom(&p, None, false), None).unwrap();
        // Python: random.seed(1); x = [0, 1, 2]; random.shuffle(x) → [1, 2, 0].
        let expected = [6, 7, 5];
        let got: Vec<u32> = ds.requests.iter().map(|r| r.output_len).collect();
        assert_eq!(got, expected);
        let chat = ds.requests.iter().find(|r| r.messages.is_some()).unwrap();
        assert_eq!(chat.messages.as_ref().unwrap().len(), 3);
        assert_eq!(chat.prompt, "more");
        // Multi-turn: the conversation becomes one request per user turn, history re-sent.
        let mt = super::super::build_dataset(
            &DatasetConfig {
                num_prompts: 4,
                ..custom(&p, Some(9), true)
            },
            None,
        )
        .unwrap();
        let lens: Vec<usize> = mt
            .requests
            .iter()
            .filter_map(|r| r.messages.as_ref().map(|m| m.len()))
            .collect();
        assert_eq!(lens, [1, 3]);
        assert!(mt.requests.iter().all(|r| r.output_len == 9));
        // No output length anywhere: refused at plan time and at build.
        let no_len = write(dir.path(), "n.jsonl", "{\"prompt\": \"a\"}\n");
        let e = check_dataset_file(&custom(&no_len, None, false).workload).unwrap_err();
        assert!(
            e.contains("n.jsonl:1: the record has no `output_tokens`"),
            "{e}"
        );
        assert!(check_dataset_file(&custom(&no_len, Some(3), false).workload).is_ok());
        let broken = write(dir.path(), "b.jsonl", "\n{\"prompt\": 3}\n");
        let e = check_dataset_file(&custom(&broken, Some(3), false).workload).unwrap_err();
        assert!(e.starts_with(&format!("{}:2:", broken.display())), "{e}");
        let missing = dir.path().join("gone.jsonl");
        assert!(check_dataset_file(&custom(&missing, None, false).workload).is_err());
    }

    #[test]
    fn oversampling_follows_python_choice() {
        let reqs: Vec<SampleRequest> = (0..3)
            .map(|i| SampleRequest::text(format!("p{i}"), None, 0, 1))
            .collect();
        let out = oversample(reqs, 8, 3);
        // Python: random.seed(3); [random.choice(range(3)) for _ in range(5)] → [0, 2, 2, 0, 1].
        let picks = ["p0", "p2", "p2", "p0", "p1"];
        let tail: Vec<String> = out[3..].iter().map(|r| r.prompt.clone()).collect();
        assert_eq!(tail, picks);
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn validity_rules_are_vllms() {
        assert!(is_valid_sequence(4, 4, false));
        assert!(!is_valid_sequence(3, 100, false));
        assert!(!is_valid_sequence(100, 3, false));
        assert!(
            is_valid_sequence(100, 3, true),
            "a fixed output length skips the check"
        );
        assert!(!is_valid_sequence(1025, 10, false));
        assert!(!is_valid_sequence(1024, 1025, false));
        assert!(is_valid_sequence(1024, 1024, false));
    }
}
