package ollamasim

import "strings"

// words are the simulated tokens, one word each.
var words = strings.Fields(`the a of to and in that is for it as with was on be by
this are from at or an which have not but had they you were their one all we can
her has there been if more when will would who so no model token stream load
queue slot prompt decode memory context latency answer simple quiet river stone
light early north value signal window garden paper orange silver`)

// perMessageTokens approximates the template tokens Ollama adds around each
// message (role markers and separators).
const perMessageTokens = 4

// countTokens is a deterministic stand-in for tokenizing the rendered prompt:
// one token per word plus a small overhead per message.
func countTokens(texts []string) int {
	n := 0
	for _, t := range texts {
		n += len(strings.Fields(t)) + perMessageTokens
	}
	return n
}
