package requestlog

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/chimeraforge/chimeraforge/observe"
)

// AppendLine appends the request log line of q, which finished at at, to b
// and returns the extended buffer. The line is one JSON object followed by
// "\n"; docs/metrics.md ("Request log") lists its fields. Label values are
// escaped as JSON strings (invalid UTF-8 becomes U+FFFD); durations are
// decimal seconds, exact to the nanosecond. It allocates only when b must
// grow.
func AppendLine(b []byte, at time.Time, q *observe.Request) []byte {
	outcome, reason := classify(q)
	b = append(b, `{"time":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","workload":`...)
	b = appendString(b, q.Workload)
	b = append(b, `,"agent":`...)
	b = appendString(b, q.Agent)
	b = append(b, `,"step":`...)
	b = appendString(b, q.Step)
	b = append(b, `,"target":`...)
	b = appendString(b, q.Target)
	b = append(b, `,"model":`...)
	b = appendString(b, q.Model)
	b = append(b, `,"outcome":"`...)
	b = append(b, outcome...)
	b = append(b, `","reason":"`...)
	b = append(b, reason...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(q.Status), 10)
	b = append(b, `,"duration_seconds":`...)
	b = appendSeconds(b, q.Duration)
	if q.FirstToken {
		b = append(b, `,"ttft_seconds":`...)
		b = appendSeconds(b, q.TimeToFirst)
		b = append(b, `,"last_token_seconds":`...)
		b = appendSeconds(b, q.LastToken)
	}
	b = append(b, `,"max_token_gap_seconds":`...)
	b = appendSeconds(b, q.MaxTokenGap)
	b = append(b, `,"content_chunks":`...)
	b = strconv.AppendInt(b, int64(q.ContentChunks), 10)
	b = append(b, `,"done":`...)
	b = strconv.AppendBool(b, q.Done)
	if q.Done {
		b = append(b, `,"eval_count":`...)
		b = strconv.AppendInt(b, int64(q.EvalCount), 10)
		b = append(b, `,"prompt_eval_count":`...)
		b = strconv.AppendInt(b, int64(q.PromptEvalCount), 10)
		b = append(b, `,"eval_duration_seconds":`...)
		b = appendSeconds(b, q.EvalDuration)
		b = append(b, `,"prompt_eval_duration_seconds":`...)
		b = appendSeconds(b, q.PromptEvalDuration)
		b = append(b, `,"load_duration_seconds":`...)
		b = appendSeconds(b, q.LoadDuration)
		b = append(b, `,"total_duration_seconds":`...)
		b = appendSeconds(b, q.TotalDuration)
		b = append(b, `,"queue_wait_seconds":`...)
		b = appendSeconds(b, q.QueueWait)
	}
	return append(b, "}\n"...)
}

// classify maps q's outcome and reason into the fixed sets, as the
// Prometheus exporter counts them: an unknown outcome is an error, a
// canceled request has reason canceled, an error with an unknown reason
// has reason server_error, and a success has none.
func classify(q *observe.Request) (observe.Outcome, observe.Reason) {
	switch q.Outcome {
	case observe.OutcomeSuccess:
		return observe.OutcomeSuccess, observe.ReasonNone
	case observe.OutcomeCanceled:
		return observe.OutcomeCanceled, observe.ReasonCanceled
	}
	for _, r := range observe.Reasons {
		if q.Reason == r {
			return observe.OutcomeError, r
		}
	}
	return observe.OutcomeError, observe.ReasonServerError
}

// appendSeconds appends d as a JSON number of seconds: the exact decimal
// value, with no exponent and no trailing zeros ("0", "1.5",
// "0.000000001", "-0.25").
func appendSeconds(b []byte, d time.Duration) []byte {
	u := uint64(d)
	if d < 0 {
		b = append(b, '-')
		u = -u // two's complement: right for math.MinInt64 too
	}
	b = strconv.AppendUint(b, u/1e9, 10)
	frac := u % 1e9
	if frac == 0 {
		return b
	}
	var f [10]byte // '.' and nine digits
	f[0] = '.'
	for i := 9; i > 0; i-- {
		f[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := len(f)
	for f[n-1] == '0' {
		n--
	}
	return append(b, f[:n]...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. It escapes what JSON requires
// (quote, backslash, control characters) and U+2028 and U+2029 as
// encoding/json does, and replaces each byte of invalid UTF-8 with U+FFFD,
// so that any label value gives a valid line.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
