// Package ollamasim is an embedded Ollama simulator: an HTTP handler that
// speaks enough of Ollama's API (chat, generate, tags, ps, show, version) for
// the daemon and for github.com/ollama/ollama/api's Client.
//
// It exists so that the load generator, its exporters and its dashboards can
// be exercised, soaked and demonstrated without a real model. It models the
// behaviour that makes Ollama interesting under load — a fixed number of
// parallel slots with a bounded FIFO queue, model loads and keep-alive
// expiry, reloads when num_ctx or num_gpu change, prompt evaluation, decode
// throughput shared by every stream on one GPU, and injected faults — but its
// numbers are invented: it is a test double and a demo, never a measurement
// of Ollama.
//
// Randomness (response length, text, jitter, faults) is drawn from a source
// seeded by Config.Seed and the request's sequence number, so the same
// requests in the same order produce the same text.
package ollamasim
