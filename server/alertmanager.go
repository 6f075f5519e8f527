package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// amPayload is Alertmanager's webhook payload, version 4
// (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
// Fields it does not list are ignored: Alertmanager adds fields across
// releases (truncatedAlerts, notification_reason), and a notification
// refused for one would be retried and never delivered.
type amPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	// NotificationReason (Alertmanager 0.28 on) is not recorded.
	NotificationReason string    `json:"notification_reason"`
	Alerts             []amAlert `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Alert statuses.
const (
	statusFiring   = "firing"
	statusResolved = "resolved"
)

// ParseAlertmanager decodes an Alertmanager webhook body (version 4) into
// the notification the ledger records. It fails on malformed JSON, data
// after the payload, another version, a status other than firing or
// resolved, and a missing group key. An alert without a status (older
// Alertmanagers) takes the notification's; the zero time Alertmanager
// writes for a firing alert's endsAt is no time.
func ParseAlertmanager(body []byte) (*ledger.Alert, error) {
	var p amPayload
	if err := decodeStrict(body, &p, false); err != nil {
		return nil, fmt.Errorf("alertmanager payload: %w", err)
	}
	switch {
	case p.Version != "4":
		return nil, fmt.Errorf("alertmanager payload version %q: only version \"4\" is understood", p.Version)
	case p.Status != statusFiring && p.Status != statusResolved:
		return nil, fmt.Errorf("alertmanager payload status %q: want firing or resolved", p.Status)
	case p.GroupKey == "":
		return nil, errors.New("alertmanager payload has no groupKey")
	}
	al := &ledger.Alert{
		Receiver: p.Receiver, Status: p.Status, GroupKey: p.GroupKey,
		GroupLabels: p.GroupLabels, CommonLabels: p.CommonLabels, CommonAnnotations: p.CommonAnnotations,
		ExternalURL: p.ExternalURL, Alerts: make([]ledger.AlertItem, 0, len(p.Alerts)),
	}
	for i, a := range p.Alerts {
		st := a.Status
		switch st {
		case "":
			st = p.Status
		case statusFiring, statusResolved:
		default:
			return nil, fmt.Errorf("alertmanager payload alerts[%d].status %q: want firing or resolved", i, a.Status)
		}
		al.Alerts = append(al.Alerts, ledger.AlertItem{
			Status: st, Fingerprint: a.Fingerprint, Labels: a.Labels, Annotations: a.Annotations,
			StartsAt: a.StartsAt.UTC(), EndsAt: a.EndsAt.UTC(), GeneratorURL: a.GeneratorURL,
		})
	}
	return al, nil
}

// AlertRequestID is the request id of a notification: its trigger id and
// its status, so that a repeat of the same notification is the same
// request, and its resolution another.
func AlertRequestID(al *ledger.Alert) string { return al.Trigger() + ":" + al.Status }

// AlertAccepted is the answer to a notification: the request queued for
// it ("" when no agent matched and nothing was queued) and the agents
// whose on_alert triggers match it.
type AlertAccepted struct {
	Request string   `json:"request,omitempty"`
	Agents  []string `json:"agents"`
}

func (s *Server) alertmanager(w http.ResponseWriter, r *hookRequest) {
	al, err := ParseAlertmanager(r.body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	req := reconcile.Request{ID: AlertRequestID(al), Alert: al, Received: s.cfg.Now().UTC()}
	agents, err := s.r.Targets(req)
	if err != nil {
		s.targetsError(w, err)
		return
	}
	if len(agents) == 0 {
		writeJSON(w, http.StatusOK, AlertAccepted{Agents: []string{}})
		return
	}
	if !s.enqueue(w, req) {
		return
	}
	writeJSON(w, http.StatusAccepted, AlertAccepted{Request: req.ID, Agents: agents})
}
