//! The `search` tool: full-text search (tantivy, BM25) over a folder of text documents
//! indexed at startup. A call carries several queries; each runs as soon as its string is
//! complete in the arguments, while the model is still writing the next ones.
//!
//! `latency` adds a fixed delay to every query, to stand in for a remote search service in
//! benchmarks (the local index answers in well under a millisecond); it is 0 unless set.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value as _, STORED, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexReader, TantivyDocument};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::arg_events::{ArgEvent, PathSeg};
use crate::defs::ToolDef;
use crate::runtime::{Tool, ToolFuture, ToolOutput};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search corpus {0}: {1}")]
    Io(String, std::io::Error),
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search corpus {0} has no .txt or .md documents")]
    Empty(String),
}

struct Corpus {
    index: Index,
    reader: IndexReader,
    title: Field,
    body: Field,
}

pub struct Search {
    corpus: Arc<Corpus>,
    pub latency: Duration,
    pub top_k: usize,
    pub max_queries: usize,
}

/// The documents of a folder: (file stem, text) for each `.txt`/`.md` file, sorted by name.
fn documents(dir: &Path) -> Result<Vec<(String, String)>, SearchError> {
    let io = |e| SearchError::Io(dir.display().to_string(), e);
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("txt" | "md")) {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            docs.push((stem.unwrap_or_default(), text));
        }
    }
    docs.sort();
    Ok(docs)
}

impl Search {
    /// Indexes every `.txt` and `.md` file of `dir` (not recursive).
    pub fn open(dir: &Path, latency: Duration) -> Result<Self, SearchError> {
        let docs = documents(dir)?;
        if docs.is_empty() {
            return Err(SearchError::Empty(dir.display().to_string()));
        }
        let mut sb = Schema::builder();
        let title = sb.add_text_field("title", TEXT | STORED);
        let body = sb.add_text_field("body", TEXT | STORED);
        let index = Index::create_in_ram(sb.build());
        let mut writer = index.writer_with_num_threads(1, 15_000_000)?;
        for (t, b) in docs {
            writer.add_document(doc!(title => t, body => b))?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Self {
            corpus: Arc::new(Corpus {
                index,
                reader,
                title,
                body,
            }),
            latency,
            top_k: 3,
            max_queries: 8,
        })
    }

    /// Documents indexed.
    pub fn len(&self) -> u64 {
        self.corpus.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Corpus {
    /// The best `k` documents for a query (query syntax errors are forgiven).
    fn query(&self, q: &str, k: usize) -> Result<Value, tantivy::TantivyError> {
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.title, self.body]);
        let (query, _) = parser.parse_query_lenient(q);
        let top = searcher.search(&query, &TopDocs::with_limit(k))?;
        let mut snippets = SnippetGenerator::create(&searcher, &*query, self.body)?;
        snippets.set_max_num_chars(240);
        let mut hits = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let title = d
                .get_first(self.title)
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let snippet = snippets.snippet_from_doc(&d).fragment().trim().to_string();
            hits.push(json!({"title": title, "score": (score * 100.0).round() / 100.0, "snippet": snippet}));
        }
        Ok(json!({"query": q, "hits": hits}))
    }
}

type Pending = Vec<(String, JoinHandle<Value>)>;

impl Search {
    fn start(&self, q: String, pending: &mut Pending) {
        let (corpus, k, latency) = (Arc::clone(&self.corpus), self.top_k, self.latency);
        let (query, name) = (q.clone(), q.clone());
        let task = tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let r = tokio::task::spawn_blocking(move || corpus.query(&query, k)).await;
            match r {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => json!({"query": name, "error": e.to_string()}),
                Err(e) => json!({"query": name, "error": e.to_string()}),
            }
        });
        pending.push((q, task));
    }
}

/// A query string complete at `queries[i]`.
fn query_event(ev: &ArgEvent) -> Option<String> {
    match ev {
        ArgEvent::Value {
            path,
            value: Value::String(s),
        } if matches!(path.as_slice(), [PathSeg::Key(k), PathSeg::Index(_)] if k == "queries") => {
            Some(s.clone())
        }
        _ => None,
    }
}

impl Tool for Search {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "search".into(),
            description: Some(format!(
                "Searches the document collection. Give one or more queries; each returns up to {} documents with a snippet.",
                self.top_k
            )),
            parameters: json!({"type": "object", "properties": {"queries": {
                "type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": self.max_queries}},
                "required": ["queries"]}),
        }
    }

    fn run(&self, mut args: UnboundedReceiver<ArgEvent>) -> ToolFuture {
        let this = Search {
            corpus: Arc::clone(&self.corpus),
            latency: self.latency,
            top_k: self.top_k,
            max_queries: self.max_queries,
        };
        Box::pin(async move {
            let mut pending: Pending = Vec::new();
            let complete = loop {
                match args.recv().await {
                    Some(ArgEvent::Complete(v)) => break v,
                    Some(ev) => {
                        if let Some(q) =
                            query_event(&ev).filter(|_| pending.len() < this.max_queries)
                        {
                            this.start(q, &mut pending);
                        }
                    }
                    None => {
                        return ToolOutput::error(
                            "the call ended before its arguments were complete",
                        )
                    }
                }
            };
            let Some(queries) = complete["queries"].as_array().filter(|q| !q.is_empty()) else {
                return ToolOutput::error("`queries` must be a non-empty list of strings");
            };
            if queries.len() > this.max_queries {
                return ToolOutput::error(format!("at most {} queries per call", this.max_queries));
            }
            // Queries the events did not carry (none in practice) start now.
            for q in queries.iter().skip(pending.len()) {
                this.start(q.as_str().unwrap_or_default().to_string(), &mut pending);
            }
            let mut out = Vec::new();
            for (q, task) in pending {
                out.push(
                    task.await
                        .unwrap_or_else(|e| json!({"query": q, "error": e.to_string()})),
                );
            }
            ToolOutput::ok(Value::Array(out).to_string())
        })
    }
}
