package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// jsonLen is the length encoding/json gives a string, as the transcript
// encodes it.
func TestJSONLen(t *testing.T) {
	for _, s := range []string{"", "plain", `"quoted" \ back`, "tab\tnew\nline\r\b\f", "\x00\x01\x1f", "<html>&amp;</html>",
		"héllo wörld ✓ 🎉", "\u2028\u2029", "bad \xff\xfe utf-8 \xe2\x82", strings.Repeat("{\"a\":\"\\n\"}", 100)} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got, want := jsonLen(s), int64(b.Len()-1); got != want {
			t.Errorf("jsonLen(%q) = %d, want %d (%s)", s, got, want, b.Bytes())
		}
	}
}

func TestDigest(t *testing.T) {
	big := strings.Repeat("0123456789", 10000)
	if got, want := argsDigest(big), fmt.Sprintf("%x", sha256.Sum256([]byte(big))); got != want {
		t.Errorf("argsDigest = %s, want %s", got, want)
	}
}

// The size the loop follows while it records is close to, and not below,
// the transcript's: exact for finished steps, an estimate for the rest.
func TestTranscriptSizeEstimate(t *testing.T) {
	for _, tc := range workLimitCases() {
		t.Run(tc.name, func(t *testing.T) {
			task := tc.task(t, t.TempDir())
			l, err := newLoop(task, taskOptions(task, loopClock, 0), newRedactor())
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			res, _ := l.run(context.Background(), &replies{responses: tc.responses})
			got, est := int64(len(res.Transcript)), l.size.total()
			t.Logf("transcript %d bytes, followed as %d", got, est)
			if tc.limit == "" && (est < got || est > got+got/10+4096) {
				t.Errorf("transcript %d bytes, followed as %d", got, est)
			}
			if tc.limit != "" && got > l.opts.maxTranscript {
				t.Errorf("transcript %d bytes, over its limit of %d", got, l.opts.maxTranscript)
			}
		})
	}
}
