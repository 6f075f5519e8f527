package controller

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// RepositoryLabel names the AgentRepository (<namespace>/<name>) a series
// is about, on the controller's /metrics.
const RepositoryLabel = "repository"

// repoMetrics exports the series of each object's reconciler (the
// daemon's reconciler_* series, DESIGN §5, kept by metrics.Metrics) on the
// manager's registry with a repository label. The label's values are the
// objects this process reconciles: an object it forgets (deleted, or gone
// to another shard) leaves /metrics.
type repoMetrics struct {
	mu    sync.Mutex
	repos map[string]prometheus.Gatherer
}

func newRepoMetrics() *repoMetrics { return &repoMetrics{repos: map[string]prometheus.Gatherer{}} }

func (c *repoMetrics) set(repo string, g prometheus.Gatherer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g == nil {
		delete(c.repos, repo)
		return
	}
	c.repos[repo] = g
}

// Describe describes nothing: the collector is unchecked, since its
// series follow the objects.
func (c *repoMetrics) Describe(chan<- *prometheus.Desc) {}

// Collect re-labels every reconciler_* series of each repository.
func (c *repoMetrics) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	repos := make(map[string]prometheus.Gatherer, len(c.repos))
	for k, v := range c.repos {
		repos[k] = v
	}
	c.mu.Unlock()
	for repo, g := range repos {
		mfs, err := g.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "reconciler_") {
				continue // the process's go_* and process_* are the manager's own
			}
			for _, m := range mf.GetMetric() {
				names := []string{RepositoryLabel}
				for _, lp := range m.GetLabel() {
					names = append(names, lp.GetName())
				}
				desc := prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil)
				ch <- &labeled{desc: desc, m: m, repo: repo}
			}
		}
	}
}

// labeled is a gathered series with the repository label added.
type labeled struct {
	desc *prometheus.Desc
	m    *dto.Metric
	repo string
}

func (l *labeled) Desc() *prometheus.Desc { return l.desc }

func (l *labeled) Write(out *dto.Metric) error {
	c := proto.Clone(l.m).(*dto.Metric)
	c.Label = append(c.Label, &dto.LabelPair{Name: proto.String(RepositoryLabel), Value: proto.String(l.repo)})
	slices.SortFunc(c.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	proto.Reset(out)
	proto.Merge(out, c)
	return nil
}
