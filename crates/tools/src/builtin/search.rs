//! The `search` tool: full-text search (tantivy, BM25) over a folder of text documents
//! indexed at startup. A call carries several queries; each runs as soon as its string is
//! complete in the arguments, while the model is still writing the next ones.
//!
//! `latency` adds a fixed delay to every query, to stand in for a remote search service in
//! benchmarks (the local index answers in well under a millisecond); it is 0 unless set.
//! The queries of one call run one after another, in order, as against a rate-limited
//! search API: each starts when its string is complete and the previous query is done.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value as _, STORED, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexReader, TantivyDocument};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;

use super::array_start;
use crate::arg_events::ArgEvent;
use crate::defs::ToolDef;
use crate::runtime::{ResultPrefix, Tool, ToolFuture, ToolOutput};

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

impl Search {
    /// The call's query worker: runs the queries it is sent one at a time, in order,
    /// publishing the results so far after each, and returns them when its input closes.
    /// Held in a `JoinSet`, so a cancelled call stops it.
    fn worker(
        &self,
        set: &mut JoinSet<Vec<Value>>,
        prefix: ResultPrefix,
    ) -> UnboundedSender<String> {
        let (corpus, k, latency) = (Arc::clone(&self.corpus), self.top_k, self.latency);
        let (tx, mut rx) = unbounded_channel::<String>();
        set.spawn(async move {
            let mut out = Vec::new();
            while let Some(q) = rx.recv().await {
                tokio::time::sleep(latency).await;
                let c = Arc::clone(&corpus);
                let query = q.clone();
                let r = tokio::task::spawn_blocking(move || c.query(&query, k)).await;
                out.push(match r {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => json!({"query": q, "error": e.to_string()}),
                    Err(e) => json!({"query": q, "error": e.to_string()}),
                });
                prefix.publish(array_start(&out));
            }
            out
        });
        tx
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

    /// Publishes the queries' results in order as each is done (the result is their JSON
    /// array), so the model can read the first ones while the last one runs.
    fn run(&self, mut args: UnboundedReceiver<ArgEvent>, prefix: ResultPrefix) -> ToolFuture {
        let mut set = JoinSet::new();
        let queue = self.worker(&mut set, prefix);
        let max = self.max_queries;
        Box::pin(async move {
            let mut sent = 0;
            let complete = loop {
                match args.recv().await {
                    Some(ArgEvent::Complete(v)) => break v,
                    Some(ev) => {
                        if let Some(q) = ev
                            .element_of("queries")
                            .and_then(|(_, q)| q.as_str())
                            .filter(|_| sent < max)
                        {
                            let _ = queue.send(q.to_string());
                            sent += 1;
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
            if queries.len() > max {
                return ToolOutput::error(format!("at most {max} queries per call"));
            }
            // Queries the events did not carry (none in practice) go last.
            for q in queries.iter().skip(sent) {
                let _ = queue.send(q.as_str().unwrap_or_default().to_string());
            }
            drop(queue);
            match set.join_next().await {
                Some(Ok(results)) => ToolOutput::ok(Value::Array(results).to_string()),
                _ => ToolOutput::error("the search worker failed"),
            }
        })
    }
}
