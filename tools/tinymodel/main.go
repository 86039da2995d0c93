// Command tinymodel writes a tiny random-weight language model that a real
// Ollama can load, so tests can drive a real server without downloading a
// model.
//
//	go run ./tools/tinymodel -out DIR
//
// writes DIR/tiny.gguf and DIR/Modelfile; `ollama create tiny -f
// DIR/Modelfile` registers it. The output is the same bytes on every run.
//
// The model is a llama-architecture GGUF (2 layers, embedding 64, 4 heads
// sharing 2 key/value heads, feed-forward 128, F32 weights: 234K parameters,
// under 1 MB) with a SentencePiece vocabulary of 1250 tokens in its metadata:
// <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, 376 English words
// such as "▁the", every prefix of those words ("▁t", "▁th") so that prompts
// tokenize into words, and single letters, digits and punctuation so that
// other ASCII text needs no byte tokens. Its weights come from a fixed-seed
// PCG generator, so it knows nothing; two things are shaped on purpose:
//
//   - It never stops early. Every token embedding carries a constant in
//     dimension 0 that no layer reads or writes, so after the final norm that
//     dimension is large and positive whatever the context. The output rows of
//     every token except the whole words have a large negative weight there,
//     so end-of-sequence, control, byte, prefix and single-character tokens
//     are never chosen: a request always produces exactly num_predict tokens
//     (eval_count == num_predict, done_reason "length").
//   - Its output is readable: it can only emit whole English words, so
//     streamed text looks like " mother or world her told ground him off"
//     rather than bytes.
//
// With temperature 0 the text for a given prompt is deterministic.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/ollama/ollama/fs/ggml"
)

// Shape of the model.
const (
	blockCount     = 2
	embeddingLen   = 64
	headCount      = 4
	headCountKV    = 2
	headDim        = embeddingLen / headCount
	feedForwardLen = 128
	contextLen     = 8192
)

// Shaping constants (see the package comment).
const (
	// seed fixes every weight; change it and the model's text changes.
	seed = 20240917
	// anchor is the constant in embedding dimension 0.
	anchor = 4.0
	// suppress is the weight on dimension 0 in the output rows of tokens
	// that must never be emitted: their logits end up hundreds below the
	// words'.
	suppress = -50.0
)

// Token types, as llama.cpp numbers them.
const (
	tokenNormal  = 1
	tokenUnknown = 2
	tokenControl = 3
	tokenByte    = 6
)

// Special token ids.
const (
	unkID = 0
	bosID = 1
	eosID = 2
)

// words are the whole-word pieces the model emits ("▁" marks a leading space).
const words = `the of and to a in is it you that he was for on are with as I his they
be at one have this from or had by hot word but what some we can out other were all there when
up use your how said an each she which do their time if will way about many then them write
would like so these her long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side been now find any new
work part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line differ
turn cause much mean before move right boy old too same tell does set three want air well also
play small end put home read hand port large spell add even land here must big high such follow
act why ask men change went light kind off need house picture try us again animal point mother
world near build self earth father head stand own page should country found answer school grow
study still learn plant cover food sun four between state keep eye never last let thought city
tree cross farm hard start might story saw far sea draw left late run while press close night
real life few north open seem together next white children begin got walk example ease paper
group always music those both mark often letter until mile river car feet care second book carry
took science eat room friend began idea fish mountain stop once base hear horse cut sure watch
color face wood main enough plain girl usual young ready above ever red list though feel talk
bird soon body dog family direct pose leave song measure door product black short numeral class
wind question happen complete ship area half rock order fire south problem piece told knew pass
since top whole king space heard best hour better true during hundred five remember step early
hold west ground interest reach fast verb sing listen six table travel less morning ten simple`

// pieces are single characters, so that any prompt tokenizes without
// falling back to bytes; the model never emits them.
const pieces = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"

// modelfile registers tiny.gguf. The template works for /api/generate and,
// through Ollama's legacy-template handling, for /api/chat. One thread per
// runner: the model is tiny, and the tests run several servers at once on
// two cores, where ggml's spinning worker threads would otherwise fight.
const modelfile = `FROM ./tiny.gguf
TEMPLATE "{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}"
PARAMETER num_thread 1
`

func main() {
	out := flag.String("out", "", "directory to write tiny.gguf and Modelfile into (created if missing)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: tinymodel -out DIR")
		os.Exit(2)
	}
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(1)
	}
}

// write creates dir and writes tiny.gguf and Modelfile into it, each through
// a temporary file renamed into place, so a reader never sees half a file.
func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeAtomic(filepath.Join(dir, "tiny.gguf"), writeGGUF); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, "Modelfile"), func(f *os.File) error {
		_, err := f.WriteString(modelfile)
		return err
	})
}

func writeAtomic(path string, fill func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op once renamed
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// vocab is the tokenizer vocabulary and which tokens the model may emit.
type vocab struct {
	tokens   []string
	scores   []float32
	types    []int32
	emitting []bool
}

func (v *vocab) add(token string, score float32, typ int32, emit bool) {
	v.tokens = append(v.tokens, token)
	v.scores = append(v.scores, score)
	v.types = append(v.types, typ)
	v.emitting = append(v.emitting, emit)
}

func newVocab() *vocab {
	v := &vocab{}
	v.add("<unk>", 0, tokenUnknown, false)
	v.add("<s>", 0, tokenControl, false)
	v.add("</s>", 0, tokenControl, false)
	for b := range 256 {
		v.add(fmt.Sprintf("<0x%02X>", b), 0, tokenByte, false)
	}
	seen := map[string]bool{}
	// SentencePiece merges the highest-scoring pieces first: words before
	// letters, so "▁the" is one token.
	score := float32(-1)
	for _, w := range strings.Fields(words) {
		piece := "▁" + w
		if seen[piece] {
			continue
		}
		seen[piece] = true
		v.add(piece, score, tokenNormal, true)
		score--
	}
	// Every prefix of a word ("▁t", "▁th" for "▁the"): SentencePiece
	// builds a token by merging adjacent pieces already in the vocabulary,
	// so without them a prompt would tokenize into single characters.
	for _, w := range strings.Fields(words) {
		prefix := "▁"
		for _, r := range w {
			prefix += string(r)
			if seen[prefix] {
				continue
			}
			seen[prefix] = true
			v.add(prefix, score, tokenNormal, false)
			score--
		}
	}
	for _, r := range pieces {
		piece := string(r)
		if seen[piece] {
			continue
		}
		seen[piece] = true
		v.add(piece, score, tokenNormal, false)
		score--
	}
	return v
}

// weights draws uniform values from a fixed-seed PCG. PCG is a specified
// algorithm and the conversion to float is ours, so the bytes do not depend
// on the Go release.
type weights struct{ rng *rand.PCG }

// uniform returns n values uniform in [-scale, scale).
func (w *weights) uniform(n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		u := float64(w.rng.Uint64()>>11) / (1 << 53) // [0, 1)
		out[i] = float32((2*u - 1) * scale)
	}
	return out
}

func ones(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// f32 is tensor data: little-endian float32, as GGUF stores F32.
type f32 []float32

func (d f32) WriteTo(w io.Writer) (int64, error) {
	buf := new(bytes.Buffer)
	buf.Grow(4 * len(d))
	if err := binary.Write(buf, binary.LittleEndian, []float32(d)); err != nil {
		return 0, err
	}
	return buf.WriteTo(w)
}

// tensor makes an F32 tensor. shape is GGUF order: the first dimension is
// the one that varies fastest (a matrix mapping n inputs to m outputs is
// {n, m}).
func tensor(name string, data []float32, shape ...uint64) *ggml.Tensor {
	return &ggml.Tensor{Name: name, Kind: uint32(ggml.TensorTypeF32), Shape: shape, WriterTo: f32(data)}
}

// model returns the metadata and tensors.
func model() (ggml.KV, []*ggml.Tensor) {
	v := newVocab()
	n := len(v.tokens)
	w := &weights{rng: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}

	kv := ggml.KV{
		"general.architecture":                   "llama",
		"general.name":                           "chimeraforge-tiny",
		"general.file_type":                      uint32(0), // all F32
		"llama.block_count":                      uint32(blockCount),
		"llama.context_length":                   uint32(contextLen),
		"llama.embedding_length":                 uint32(embeddingLen),
		"llama.feed_forward_length":              uint32(feedForwardLen),
		"llama.attention.head_count":             uint32(headCount),
		"llama.attention.head_count_kv":          uint32(headCountKV),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.rope.dimension_count":             uint32(headDim),
		"llama.rope.freq_base":                   float32(10000),
		"llama.vocab_size":                       uint32(n),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.tokens":                  v.tokens,
		"tokenizer.ggml.scores":                  v.scores,
		"tokenizer.ggml.token_type":              v.types,
		"tokenizer.ggml.unknown_token_id":        uint32(unkID),
		"tokenizer.ggml.bos_token_id":            uint32(bosID),
		"tokenizer.ggml.eos_token_id":            uint32(eosID),
		"tokenizer.ggml.add_bos_token":           true,
		"tokenizer.ggml.add_eos_token":           false,
	}

	// Token embeddings: the anchor in dimension 0, random elsewhere.
	embd := w.uniform(n*embeddingLen, 1)
	for t := range n {
		embd[t*embeddingLen] = anchor
	}

	// Norm weights that ignore dimension 0 keep the anchor out of the
	// layers' inputs, so attention and feed-forward see only the random
	// part and cannot cancel the anchor.
	layerNorm := ones(embeddingLen)
	layerNorm[0] = 0

	ts := []*ggml.Tensor{tensor("token_embd.weight", embd, embeddingLen, uint64(n))}
	in := 1 / math.Sqrt(embeddingLen)
	for i := range blockCount {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			tensor(p+"attn_norm.weight", layerNorm, embeddingLen),
			tensor(p+"attn_q.weight", w.uniform(embeddingLen*embeddingLen, 2*in), embeddingLen, embeddingLen),
			tensor(p+"attn_k.weight", w.uniform(embeddingLen*headCountKV*headDim, 2*in), embeddingLen, headCountKV*headDim),
			tensor(p+"attn_v.weight", w.uniform(embeddingLen*headCountKV*headDim, in), embeddingLen, headCountKV*headDim),
			tensor(p+"attn_output.weight", zeroDim0(w.uniform(embeddingLen*embeddingLen, in), embeddingLen), embeddingLen, embeddingLen),
			tensor(p+"ffn_norm.weight", layerNorm, embeddingLen),
			tensor(p+"ffn_gate.weight", w.uniform(embeddingLen*feedForwardLen, in), embeddingLen, feedForwardLen),
			tensor(p+"ffn_up.weight", w.uniform(embeddingLen*feedForwardLen, in), embeddingLen, feedForwardLen),
			tensor(p+"ffn_down.weight", zeroDim0(w.uniform(feedForwardLen*embeddingLen, 1/math.Sqrt(feedForwardLen)), feedForwardLen), feedForwardLen, embeddingLen),
		)
	}

	// Output: random rows for the words; a large negative weight on the
	// anchor for every other token.
	out := w.uniform(n*embeddingLen, 2*in)
	for t := range n {
		if v.emitting[t] {
			out[t*embeddingLen] = 0
		} else {
			out[t*embeddingLen] = suppress
		}
	}
	ts = append(ts,
		tensor("output_norm.weight", ones(embeddingLen), embeddingLen),
		tensor("output.weight", out, embeddingLen, uint64(n)),
	)
	return kv, ts
}

// zeroDim0 clears output row 0 of a projection with the given number of
// inputs, so the layer never writes into the anchor dimension.
func zeroDim0(m []float32, inputs int) []float32 {
	for i := range inputs {
		m[i] = 0
	}
	return m
}

func writeGGUF(f *os.File) error {
	kv, ts := model()
	return ggml.WriteGGUF(f, kv, ts)
}
