package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

func TestWriteIsDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if err := write(dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"tiny.gguf", "Modelfile"} {
		x := readFile(t, filepath.Join(a, name))
		y := readFile(t, filepath.Join(b, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs (%d and %d bytes)", name, len(x), len(y))
		}
	}
	entries, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("output directory holds %d entries, want tiny.gguf and Modelfile only", len(entries))
	}
}

func TestGGUFDecodes(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 2<<20 {
		t.Errorf("tiny.gguf is %d bytes, want under 2 MiB", st.Size())
	}

	m, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	kv := m.KV()
	if got := kv.Architecture(); got != "llama" {
		t.Errorf("architecture = %q, want llama", got)
	}
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"block_count", kv.BlockCount(), blockCount},
		{"embedding_length", kv.EmbeddingLength(), embeddingLen},
		{"head_count", kv.HeadCountMax(), headCount},
		{"head_count_kv", kv.HeadCountKVMax(), headCountKV},
		{"context_length", kv.ContextLength(), contextLen},
		{"feed_forward_length", uint64(kv.Uint("feed_forward_length")), feedForwardLen},
		{"eos_token_id", uint64(kv.Uint("tokenizer.ggml.eos_token_id")), eosID},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if got := kv.String("tokenizer.ggml.model"); got != "llama" {
		t.Errorf("tokenizer.ggml.model = %q, want llama", got)
	}

	tokens := kv.Strings("tokenizer.ggml.tokens")
	types := kv.Ints("tokenizer.ggml.token_type")
	if len(tokens) != len(types) || len(tokens) != len(kv.Floats("tokenizer.ggml.scores")) {
		t.Fatalf("vocabulary arrays differ in length: %d tokens, %d types", len(tokens), len(types))
	}
	if len(tokens) < 3+256+200 {
		t.Errorf("vocabulary has %d tokens, want specials, 256 bytes and a few hundred words", len(tokens))
	}
	if tokens[unkID] != "<unk>" || tokens[bosID] != "<s>" || tokens[eosID] != "</s>" {
		t.Errorf("special tokens = %q, want <unk> <s> </s>", tokens[:3])
	}
	seen := map[string]bool{}
	bytesTokens := 0
	for _, tok := range tokens {
		if seen[tok] {
			t.Errorf("duplicate token %q", tok)
		}
		seen[tok] = true
		if strings.HasPrefix(tok, "<0x") {
			bytesTokens++
		}
	}
	if bytesTokens != 256 || !seen["<0x0A>"] || !seen["▁the"] {
		t.Errorf("vocabulary lacks byte tokens or words: %d byte tokens", bytesTokens)
	}

	if got, want := len(m.Tensors().Items()), 3+9*blockCount; got != want {
		t.Errorf("%d tensors, want %d", got, want)
	}
	for _, tt := range m.Tensors().Items() {
		if tt.Kind != uint32(ggml.TensorTypeF32) {
			t.Errorf("tensor %s has type %s, want F32", tt.Name, tt.Type())
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
