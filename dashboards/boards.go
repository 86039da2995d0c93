package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

// Board is one generated Grafana dashboard and the file it is written to.
type Board struct {
	File      string
	Dashboard dashboard.Dashboard //nolint:staticcheck // the classic JSON model, which Grafana provisions from files
}

// EmptyUntilVersionChange is said in the description of every panel that
// shows a figure held from before the last Ollama version change: such a
// panel has nothing to show until a version changes, and tests use the
// sentence to tell it from a broken panel.
const EmptyUntilVersionChange = "Empty until a target of the workload reports a new Ollama version."

// EmptyUntilCompareHistory is said in the description of every panel whose
// every query looks back by the compare variable (offset $compare): it has
// nothing to show until Prometheus holds that much history.
const EmptyUntilCompareHistory = "Empty until Prometheus holds data from $compare ago."

// Dashboard UIDs: stable, so that links and bookmarks survive regeneration.
const (
	UIDOverview   = "chimeraforge-overview"
	UIDAgent      = "chimeraforge-agent"
	UIDTargets    = "chimeraforge-targets"
	UIDRegression = "chimeraforge-regression"
)

// Boards builds every dashboard. Each is tagged chimeraforge and links to
// the others by that tag.
func Boards() ([]Board, error) {
	builders := []func() (Board, error){
		overviewBoard,
		agentBoard,
		targetsBoard,
		regressionBoard,
	}
	boards := make([]Board, 0, len(builders))
	for _, build := range builders {
		b, err := build()
		if err != nil {
			return nil, err
		}
		boards = append(boards, b)
	}
	return boards, nil
}
