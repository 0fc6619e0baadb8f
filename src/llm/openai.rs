//! The `openai` provider: async-openai against any OpenAI-compatible chat-completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's llama-server, LM Studio).
//!
//! async-openai builds and parses the requests; its HTTP layer is replaced (the crate's
//! `middleware` feature) by [`RetryingHttp`], which retries 429 (honouring `Retry-After`), 5xx,
//! connection errors and timeouts with exponential backoff and jitter, up to a cap, and writes a
//! line to the run log for each retry. Calls run concurrently up to the generator's
//! `concurrency`; a per-run [`Budget`] stops spending when reached. The API key is read from the
//! environment variable the manifest names and is scrubbed from every message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{ChatCompletionRequestUserMessage, CreateChatCompletionRequest};
use tokio::sync::Semaphore;

use super::openai_answer::ChatResponse;
use super::{Answer, Budget, CallJob, Generator, Outcome, Tally, store_answer};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::hash::SplitMix64;
use crate::llm::config::GeneratorConfig;
use crate::progress::Progress;

tokio::task_local! {
    /// The call a request belongs to, for retry log lines.
    static CALL_LABEL: String;
}

/// How the HTTP layer retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub timeout: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &GeneratorConfig) -> Self {
        Self {
            max_retries: c.max_retries,
            timeout: Duration::from_secs_f64(c.timeout_s),
            backoff: Duration::from_secs_f64(c.backoff_s),
            max_backoff: Duration::from_secs_f64(c.max_backoff_s),
        }
    }

    /// The delay before retry `attempt` (0-based): exponential, capped, with ±50% jitter; a
    /// server's `Retry-After` wins (up to 10 minutes).
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut SplitMix64,
    ) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(Duration::from_secs(600));
        }
        let exp = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max_backoff);
        let jitter = 0.5 + (rng.next_u64() % 1000) as f64 / 1000.0;
        exp.mul_f64(jitter)
    }
}

/// `Retry-After` (seconds) or `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// The HTTP layer under async-openai: one request, retried as [`RetryPolicy`] says.
#[derive(Clone)]
pub struct RetryingHttp {
    http: reqwest::Client,
    policy: RetryPolicy,
    log: Arc<dyn Fn(String) + Send + Sync>,
    rng: Arc<Mutex<SplitMix64>>,
}

/// Why an attempt did not get a usable response.
#[derive(Debug)]
struct GaveUp(String);

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for GaveUp {}

impl RetryingHttp {
    pub fn new(policy: RetryPolicy, log: Arc<dyn Fn(String) + Send + Sync>) -> Result<Self> {
        // TLS through rustls with the ring provider (ureq, for `data pull`, uses the same).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            http,
            policy,
            log,
            rng: Arc::new(Mutex::new(SplitMix64::new(seed))),
        })
    }

    async fn send(
        self,
        factory: HttpRequestFactory,
    ) -> std::result::Result<reqwest::Response, tower::BoxError> {
        let label = CALL_LABEL
            .try_with(|l| l.clone())
            .unwrap_or_else(|_| "request".into());
        let mut attempt = 0u32;
        loop {
            let request = factory.build().await?;
            let result =
                tokio::time::timeout(self.policy.timeout, self.http.execute(request)).await;
            let (why, wait_hint) = match result {
                Err(_) => (
                    format!("timed out after {:.1}s", self.policy.timeout.as_secs_f64()),
                    None,
                ),
                Ok(Err(e)) if e.is_timeout() => (
                    format!("timed out after {:.1}s", self.policy.timeout.as_secs_f64()),
                    None,
                ),
                Ok(Err(e)) if e.is_connect() || e.is_request() => {
                    (format!("connection error: {}", without_url(&e)), None)
                }
                Ok(Err(e)) => return Err(Box::new(GaveUp(without_url(&e)))),
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    if status.as_u16() == 429 || status.is_server_error() {
                        let ra = retry_after(resp.headers());
                        if attempt >= self.policy.max_retries {
                            // Hand the last response on: async-openai turns its body into the error.
                            (self.log)(format!(
                                "openai: {label}: HTTP {}, giving up after {} retries",
                                status.as_u16(),
                                attempt
                            ));
                            return Ok(resp);
                        }
                        (format!("HTTP {}", status.as_u16()), ra)
                    } else {
                        return Ok(resp);
                    }
                }
            };
            if attempt >= self.policy.max_retries {
                (self.log)(format!(
                    "openai: {label}: {why}, giving up after {attempt} retries"
                ));
                return Err(Box::new(GaveUp(format!(
                    "{why} (gave up after {attempt} retries)"
                ))));
            }
            let delay = {
                let mut rng = self.rng.lock().expect("rng");
                self.policy.delay(attempt, wait_hint, &mut rng)
            };
            (self.log)(format!(
                "openai: {label}: {why}, retry {}/{} in {:.2}s{}",
                attempt + 1,
                self.policy.max_retries,
                delay.as_secs_f64(),
                if wait_hint.is_some() {
                    " (Retry-After)"
                } else {
                    ""
                }
            ));
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// A reqwest error's text without the URL (which could carry credentials in odd setups).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}

/// The API key, if the generator names a variable for it.
pub fn api_key(c: &GeneratorConfig) -> Result<String> {
    match &c.api_key_env {
        None => Ok(String::new()),
        Some(var) => std::env::var(var).map_err(|_| {
            Error::config(format!(
                "generator `{}`: the environment variable {var} (its `api_key_env`) is not set; export it, or remove `api_key_env` for an endpoint without a key",
                c.name
            ))
        }),
    }
}

/// Replace the key in a message with `***`.
fn scrub(msg: &str, key: &str) -> String {
    if key.len() >= 4 {
        msg.replace(key, "***")
    } else {
        msg.to_string()
    }
}

/// One line for a failed call: the server's own error message where it sent one (also when
/// async-openai could not read the error object, as for llama-server's numeric `code`), with
/// advice when it is about the context size.
fn describe_error(e: &OpenAIError) -> String {
    match e {
        OpenAIError::JSONDeserialize(err, content) => {
            match super::openai_answer::error_body(content) {
                Some(server) => format!("the server answered with an error{}", server.describe()),
                None => format!(
                    "malformed response body ({err}): {}",
                    super::preview(content, 200)
                ),
            }
        }
        // An error object async-openai could not read (llama-server's numeric `code`) arrives
        // as its raw body in `message`.
        OpenAIError::ApiError(api) => {
            let (status, message) = (api.status_code.as_u16(), &api.api_error.message);
            match super::openai_answer::error_body(message) {
                Some(server) => format!(
                    "HTTP {status}: the server answered with an error{}",
                    server.describe()
                ),
                None => format!(
                    "HTTP {status}: API error: {}",
                    super::openai_answer::with_context_advice(message)
                ),
            }
        }
        OpenAIError::Reqwest(err) => without_url(err),
        other => other.to_string(),
    }
}

/// One chat completion.
async fn call_once(
    client: &Client<OpenAIConfig>,
    cfg: &GeneratorConfig,
    prompt: &str,
    items: usize,
) -> std::result::Result<Answer, String> {
    let started = Instant::now();
    #[allow(deprecated)]
    let request = CreateChatCompletionRequest {
        model: cfg.model.clone(),
        messages: vec![ChatCompletionRequestUserMessage::from(prompt).into()],
        temperature: Some(cfg.temperature as f32),
        top_p: Some(cfg.top_p as f32),
        max_tokens: Some(cfg.max_tokens),
        seed: Some(cfg.seed as i64),
        ..Default::default()
    };
    let mut request =
        serde_json::to_value(&request).map_err(|e| format!("cannot serialize the request: {e}"))?;
    if cfg.structured {
        request["response_format"] = super::structured::response_format(items, cfg.item_chars);
    }
    // Read leniently: servers leave out fields async-openai's typed response requires.
    let resp: ChatResponse = client
        .chat()
        .create_byot(request)
        .await
        .map_err(|e| describe_error(&e))?;
    let reply = resp.reply(cfg.max_tokens)?;
    let text = reply.text;
    // Some servers send no `usage` (absent or null), or zeros; the budget must hold all the same.
    let counted = reply.usage;
    let (prompt_tokens, completion_tokens) = counted.unwrap_or_else(|| {
        (
            super::estimate_tokens(prompt),
            super::estimate_tokens(&text),
        )
    });
    Ok(Answer {
        prompt_tokens,
        completion_tokens,
        usage_estimated: counted.is_none(),
        text,
        finish_reason: reply.finish_reason,
        seconds: started.elapsed().as_secs_f64(),
        decode_seconds: None,
        batched: None,
    })
}

/// Make the pending calls concurrently (at most `concurrency` in flight).
#[allow(clippy::too_many_arguments)]
pub fn run(
    generator: &Generator,
    jobs: &[CallJob],
    pending: &[usize],
    cache: &Cache,
    budget: &Budget,
    progress: &Progress,
    tally: &Tally,
    outcomes: &mut BTreeMap<usize, Outcome>,
) -> Result<()> {
    let cfg = &generator.config;
    let key = api_key(cfg)?;
    let log_progress = progress.clone();
    let key_for_log = key.clone();
    let log: Arc<dyn Fn(String) + Send + Sync> =
        Arc::new(move |line: String| log_progress.log(scrub(&line, &key_for_log)));
    let http = RetryingHttp::new(RetryPolicy::from_config(cfg), log.clone())?;
    let service = tower::service_fn(move |factory: HttpRequestFactory| http.clone().send(factory));
    let config = OpenAIConfig::new()
        .with_api_base(cfg.base_url.trim_end_matches('/'))
        .with_api_key(key.clone())
        .with_org_id("")
        .with_project_id("");
    let client = Client::with_config(config).with_http_service(service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    let store_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    // Whether the run log already says that tokens are estimated (once per run is enough).
    let said_estimated = AtomicBool::new(false);
    runtime.block_on(async {
        let mut set = Vec::new();
        for &i in pending {
            let job = &jobs[i];
            let sem = sem.clone();
            let client = &client;
            let key = &key;
            let results = &results;
            let store_errors = &store_errors;
            let said_estimated = &said_estimated;
            set.push(CALL_LABEL.scope(job.label.clone(), async move {
                let _permit = sem.acquire().await.expect("semaphore open");
                let cost = Budget::call_cost(&job.prompt, cfg.max_tokens);
                let start = loop {
                    match budget.try_start(cost) {
                        super::Start::Wait => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await
                        }
                        other => break other,
                    }
                };
                let o = match start {
                    super::Start::Stop(why) => {
                        progress.log(format!(
                            "generate {}: {} skipped: {why}",
                            generator.name, job.label
                        ));
                        Outcome::Skipped { reason: why }
                    }
                    super::Start::Wait => unreachable!("the loop waits"),
                    super::Start::Go => match call_once(client, cfg, &job.prompt, job.items).await {
                        Ok(answer) => {
                            budget.spend(&answer, cost);
                            if answer.usage_estimated
                                && !said_estimated.swap(true, Ordering::SeqCst)
                            {
                                progress.log(format!(
                                    "generate {}: {}: the server sent no token usage; tokens are estimated as characters / {} (rounded up) of the prompt and the answer, and counted against the budget",
                                    generator.name,
                                    job.label,
                                    super::CHARS_PER_TOKEN
                                ));
                            }
                            match store_answer(cache, &job.id, &answer) {
                                Ok(()) => Outcome::Done { answer },
                                Err(e) => {
                                    store_errors.lock().expect("errors").push(e.clone());
                                    Outcome::Failed { error: e.message }
                                }
                            }
                        }
                        Err(e) => {
                            budget.release(cost);
                            let e = scrub(&e, key);
                            progress.log(format!(
                                "generate {}: {} failed: {e}",
                                generator.name, job.label
                            ));
                            Outcome::Failed { error: e }
                        }
                    },
                };
                tally.record(&o);
                results.lock().expect("results").push((i, o));
            }));
        }
        futures_join_all(set).await;
    });
    if let Some(e) = store_errors
        .into_inner()
        .expect("errors")
        .into_iter()
        .next()
    {
        return Err(e);
    }
    for (i, o) in results.into_inner().expect("results") {
        outcomes.insert(i, o);
    }
    Ok(())
}

/// Await every future, concurrently, on the current task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_and_retry_after_wins() {
        let p = RetryPolicy {
            max_retries: 5,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        };
        let mut rng = SplitMix64::new(1);
        let d0 = p.delay(0, None, &mut rng);
        assert!(d0 >= Duration::from_millis(50) && d0 < Duration::from_millis(150));
        let d3 = p.delay(3, None, &mut rng);
        assert!(d3 >= Duration::from_millis(350) && d3 < Duration::from_millis(1050));
        let d9 = p.delay(9, None, &mut rng);
        assert!(d9 < Duration::from_millis(1050), "capped: {d9:?}");
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn the_key_is_scrubbed() {
        assert_eq!(
            scrub("bad key sk-12345 rejected", "sk-12345"),
            "bad key *** rejected"
        );
    }
}
