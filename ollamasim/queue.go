package ollamasim

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// errBusy is Ollama's answer when the queue is full, word for word.
var errBusy = errors.New("server busy, please try again.  maximum pending requests exceeded")

// slots hands out a fixed number of parallel slots in arrival order, with at
// most max requests waiting, like Ollama's scheduler with OLLAMA_NUM_PARALLEL
// and OLLAMA_MAX_QUEUE.
type slots struct {
	size, max int

	mu    sync.Mutex
	busy  int
	queue []*waiter
}

type waiter struct {
	ready   chan struct{}
	granted bool // guarded by slots.mu
}

// acquire waits for a slot, first come first served. It returns errBusy at
// once when max requests already wait, or ctx's error when the caller gives
// up, in which case it has left the queue.
func (q *slots) acquire(ctx context.Context) error {
	q.mu.Lock()
	if q.busy < q.size && len(q.queue) == 0 {
		q.busy++
		q.mu.Unlock()
		return nil
	}
	if len(q.queue) >= q.max {
		q.mu.Unlock()
		return errBusy
	}
	w := &waiter{ready: make(chan struct{})}
	q.queue = append(q.queue, w)
	q.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		if w.granted { // the slot came as we gave up: pass it on
			q.mu.Unlock()
			q.release()
			return ctx.Err()
		}
		if i := slices.Index(q.queue, w); i >= 0 {
			q.queue = slices.Delete(q.queue, i, i+1)
		}
		q.mu.Unlock()
		return ctx.Err()
	}
}

// release gives the slot to the longest waiting request, or frees it.
func (q *slots) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) > 0 {
		w := q.queue[0]
		q.queue = slices.Delete(q.queue, 0, 1)
		w.granted = true
		close(w.ready)
		return
	}
	q.busy--
}

func (q *slots) state() (busy, queued int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.busy, len(q.queue)
}
