package agent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sashabaranov/go-openai"
)

// recordRun runs a loopScenario and returns its transcript and the tree it
// produced.
func recordLoopRun(t *testing.T, file string) (loopScenario, []byte, map[string]string) {
	t.Helper()
	sc, ws, _ := setupScenario(t, file)
	res, err := loopRunner(&loopScript{responses: sc.responses}).Run(context.Background(), loopTask(loopAgent(), ws))
	if err != nil {
		t.Fatal(err)
	}
	return sc, res.Transcript, snapshotTree(t, ws)
}

func TestReplay(t *testing.T) {
	for _, name := range []string{"read-edit-finish", "injection"} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", "loop", name+".txtar")
			sc, transcript, want := recordLoopRun(t, file)
			// A fresh checkout of the same spec commit.
			dir := t.TempDir()
			seedTree(t, dir, sc.repo)
			res, err := Replay(context.Background(), loopTask(loopAgent(), dir), transcript)
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if diff := cmp.Diff(want, snapshotTree(t, dir)); diff != "" {
				t.Errorf("replayed tree (-recorded +replayed):\n%s", diff)
			}
			rec, _ := ParseTranscript(transcript)
			if res.Summary != rec.Result.Summary || res.Risk != rec.Result.Risk {
				t.Errorf("Result = %+v, recorded %+v", res, rec.Result)
			}
			rep, err := ParseTranscript(res.Transcript)
			if err != nil {
				t.Fatal(err)
			}
			// The same responses through the same tools give the same
			// tool results.
			for i, s := range rep.Steps {
				for j, c := range s.ToolCalls {
					if want := rec.Steps[i].ToolCalls[j].Result; c.Result != want {
						t.Errorf("step %d call %d: %q, recorded %q", i+1, j, c.Result, want)
					}
				}
			}
		})
	}
}

func TestReplayFailures(t *testing.T) {
	file := filepath.Join("testdata", "loop", "read-edit-finish.txtar")
	sc, transcript, _ := recordLoopRun(t, file)
	tr, err := ParseTranscript(transcript)
	if err != nil {
		t.Fatal(err)
	}
	truncated := *tr
	truncated.Steps = tr.Steps[:3]
	short, _ := truncated.Marshal()
	v2 := strings.Replace(string(transcript), `"version": 1`, `"version": 2`, 1)

	tests := []struct {
		name       string
		transcript []byte
		task       func(Task) Task
		wantErr    error
		wantMsg    string
	}{
		{name: "truncated", transcript: short, wantErr: ErrReplayExhausted,
			wantMsg: "run bumper: model call 4: the transcript has no more recorded responses: the loop asked for response 4, the transcript records 3"},
		{name: "not json", transcript: []byte("{"), wantErr: ErrTranscript},
		{name: "empty", transcript: nil, wantErr: ErrTranscript},
		{name: "other version", transcript: []byte(v2), wantErr: ErrTranscript, wantMsg: "version 2, want 1"},
		{name: "other agent", transcript: transcript, task: func(t Task) Task { t.Agent.Name = "other"; return t }, wantErr: ErrTranscript},
		{name: "other run", transcript: transcript, task: func(t Task) Task { t.RunID = "000000000000"; return t }, wantErr: ErrTranscript},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			seedTree(t, dir, sc.repo)
			task := loopTask(loopAgent(), dir)
			if tt.task != nil {
				task = tt.task(task)
			}
			res, err := Replay(context.Background(), task, tt.transcript)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want %q", err, tt.wantMsg)
			}
			if tt.name == "truncated" && len(res.Transcript) == 0 {
				t.Error("no transcript for the failed replay")
			}
		})
	}
}

// TestReplayFailedRun replays a run that hit its step limit: the replay
// fails the same way, with the recorded limit even if the agent's is now
// higher.
func TestReplayFailedRun(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/a.txt": "a\n"})
	a := loopAgent()
	a.Limits.MaxSteps = 2
	m := &loopScript{respond: func(context.Context, int) (openai.ChatCompletionResponse, error) {
		return loopTools(loopCall{"write_file", `{"path":"services/a.txt","content":"b\n"}`}), nil
	}}
	res, err := loopRunner(m).Run(context.Background(), loopTask(a, dir))
	if !errors.Is(err, ErrStepLimit) {
		t.Fatalf("Run: %v", err)
	}
	dir2 := t.TempDir()
	seedTree(t, dir2, map[string]string{"services/a.txt": "a\n"})
	a2 := loopAgent()
	a2.Limits.MaxSteps = 50
	if _, err := Replay(context.Background(), loopTask(a2, dir2), res.Transcript); !errors.Is(err, ErrStepLimit) {
		t.Errorf("Replay: %v, want ErrStepLimit", err)
	}
	if diff := cmp.Diff(snapshotTree(t, dir), snapshotTree(t, dir2)); diff != "" {
		t.Errorf("replayed tree (-recorded +replayed):\n%s", diff)
	}
}

// TestReplayWorkLimits replays the runs of the work limit cases: a run
// that failed on a limit replays to the same failure, and one with a
// refused call whose arguments the transcript cut replays to the same
// result and tree, taking the call's recorded result.
func TestReplayWorkLimits(t *testing.T) {
	for _, tc := range workLimitCases() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			res, runErr := loopRunner(&replies{responses: tc.responses}).Run(context.Background(), tc.task(t, dir))
			dir2 := t.TempDir()
			rep, err := Replay(context.Background(), tc.task(t, dir2), res.Transcript)
			if tc.limit != "" {
				var le, rle *LimitError
				if !errors.As(runErr, &le) || !errors.As(err, &rle) || *le != *rle || err.Error() != runErr.Error() {
					t.Fatalf("Replay: %v\nthe run: %v", err, runErr)
				}
				return
			}
			if err != nil || runErr != nil {
				t.Fatalf("Replay: %v; the run: %v", err, runErr)
			}
			if rep.Summary != res.Summary || rep.Body != res.Body {
				t.Errorf("Result = %+v, the run's %+v", rep, res)
			}
			if diff := cmp.Diff(snapshotTree(t, dir), snapshotTree(t, dir2)); diff != "" {
				t.Errorf("replayed tree (-recorded +replayed):\n%s", diff)
			}
			rec, _ := ParseTranscript(res.Transcript)
			got, _ := ParseTranscript(rep.Transcript)
			for i, s := range rec.Steps {
				for j, c := range s.ToolCalls {
					r := got.Steps[i].ToolCalls[j]
					if r.Result != c.Result || r.Error != c.Error || r.ArgsSHA256 != c.ArgsSHA256 || r.ArgsBytes != c.ArgsBytes || r.Arguments != c.Arguments {
						t.Errorf("step %d call %d replayed as %+v, recorded %+v", i+1, j+1, r, c)
					}
				}
			}
		})
	}
}

// A replayed call whose recorded arguments were cut must be the call the
// transcript recorded.
func TestReplayCutCallMismatch(t *testing.T) {
	tc := workLimitCases()[len(workLimitCases())-1] // refused writes over the file limit
	res, err := loopRunner(&replies{responses: tc.responses}).Run(context.Background(), tc.task(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := ParseTranscript(res.Transcript)
	tr.Steps[0].ToolCalls[0].ID = "call_other"
	b, _ := tr.Marshal()
	if _, err := Replay(context.Background(), tc.task(t, t.TempDir()), b); !errors.Is(err, ErrTranscript) {
		t.Errorf("Replay: %v, want ErrTranscript", err)
	}
}
