package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"
)

func TestTranscriptDeterministic(t *testing.T) {
	run := func() []byte {
		sc, ws, _ := setupScenario(t, "testdata/loop/read-edit-finish.txtar")
		res, err := loopRunner(&loopScript{responses: sc.responses}).Run(context.Background(), loopTask(loopAgent(), ws))
		if err != nil {
			t.Fatal(err)
		}
		return res.Transcript
	}
	a, b := run(), run()
	if !bytes.Equal(a, b) {
		t.Error("two runs of the same conversation give different transcripts")
	}
	if !bytes.HasPrefix(a, []byte("{\n  \"version\": 1,\n  \"agent\": \"bumper\",")) {
		t.Errorf("transcript starts %.60q", a)
	}
	tr, err := ParseTranscript(a)
	if err != nil {
		t.Fatal(err)
	}
	again, err := tr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, again) {
		t.Error("parsing and marshaling a transcript changes it")
	}
}

func TestTranscriptTimings(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time {
		now = now.Add(1500 * time.Microsecond)
		return now
	}
	m := &loopScript{responses: []openai.ChatCompletionResponse{loopTools(loopCall{"list_files", "{}"}), loopFinish()}}
	o := loopRunner(m)
	o.Now = clock
	res, err := o.Run(context.Background(), loopTask(loopAgent(), t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ParseTranscript(res.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Start != "2026-01-02T03:04:05.0015Z" {
		t.Errorf("start = %q", tr.Start)
	}
	s := tr.Steps[0]
	if s.Start != "2026-01-02T03:04:05.003Z" || s.DurationMS != 1.5 || s.ToolCalls[0].DurationMS != 1.5 {
		t.Errorf("step timings: start %q, duration %v, tool %v", s.Start, s.DurationMS, s.ToolCalls[0].DurationMS)
	}
	if tr.DurationMS <= 0 {
		t.Errorf("run duration %v", tr.DurationMS)
	}
	if tr.Usage != (TranscriptUsage{InputTokens: 200, OutputTokens: 20}) || s.Usage != (TranscriptUsage{InputTokens: 100, OutputTokens: 10}) {
		t.Errorf("usage: run %+v, step %+v", tr.Usage, s.Usage)
	}
}

func TestParseTranscript(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"version": 0}`, `{"version": 2}`, `{"version": "1"}`} {
		if _, err := ParseTranscript([]byte(in)); !errors.Is(err, ErrTranscript) {
			t.Errorf("ParseTranscript(%q) = %v, want ErrTranscript", in, err)
		}
	}
	b, _ := json.Marshal(Transcript{Version: 1, Agent: "a"})
	if tr, err := ParseTranscript(b); err != nil || tr.Agent != "a" {
		t.Errorf("ParseTranscript = %v, %v", tr, err)
	}
}
