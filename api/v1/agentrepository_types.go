package v1

import (
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AgentRepositoryKind is the kind of AgentRepository objects.
const AgentRepositoryKind = "AgentRepository"

// DefaultInterval is the interval of an object that does not set one.
const DefaultInterval = 5 * time.Minute

// SecretKeyRef names one key of a Secret in the object's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
	// Key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +required
	Key string `json:"key"`
}

// EnvSecretRef makes one key of a Secret in the object's namespace
// available to the repository's runs under an environment variable name:
// what providers.hcl and forge blocks resolve with env("NAME"). The value
// is never logged nor recorded; only the name is.
type EnvSecretRef struct {
	SecretKeyRef `json:",inline"`
	// Env is the variable name the value is resolved under.
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=128
	// +required
	Env string `json:"env"`
}

// AgentRepositorySpec is the desired-state repository to reconcile and how.
type AgentRepositorySpec struct {
	// URL of the desired-state repository: http(s):// or file://.
	// +kubebuilder:validation:Pattern=`^(https?|file)://.+$`
	// +kubebuilder:validation:MaxLength=2048
	// +required
	URL string `json:"url"`

	// Branch is the protected branch holding the desired state.
	// +kubebuilder:default=main
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9._/]*$`
	// +optional
	Branch string `json:"branch,omitempty"`

	// Interval is the longest time between passes; a pass runs sooner when
	// the repository has work due sooner (a schedule slot, a retry).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:default="5m"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Timeout bounds one pass (fetch, agents' runs, pushes).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Suspend stops passes until it is false again.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// SigningKeySecretRef is the Secret key holding the ledger signing key
	// written by `reconciler keygen`.
	// +required
	SigningKeySecretRef SecretKeyRef `json:"signingKeySecretRef"`

	// Identity commits proposals and ledger entries, as "Name <email>".
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Identity string `json:"identity,omitempty"`

	// ForgeTokenSecretRefs are the forge tokens the spec's forge block
	// names by environment variable.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ForgeTokenSecretRefs []EnvSecretRef `json:"forgeTokenSecretRefs,omitempty"`

	// ProviderSecretRefs are the model providers' API keys providers.hcl
	// names by environment variable.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	ProviderSecretRefs []EnvSecretRef `json:"providerSecretRefs,omitempty"`

	// CacheVolumePath is the directory of the repository's mirror and
	// saved ledger state, relative to the controller's cache directory (a
	// volume of the controller's pod); the default is <namespace>/<name>.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9._]*(/[A-Za-z0-9][-A-Za-z0-9._]*)*$`
	// +optional
	CacheVolumePath string `json:"cacheVolumePath,omitempty"`
}

// AgentRepositoryStatus is the observed state of the repository.
type AgentRepositoryStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`

	// ObservedGeneration is the object generation the last pass ran with.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions are Ready, Reconciling and Stalled.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastAppliedRevision is the spec in force, as <branch>@sha1:<commit>.
	// +optional
	LastAppliedRevision string `json:"lastAppliedRevision,omitempty"`

	// LastAttemptedRevision is the head the last pass fetched.
	// +optional
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`

	// LedgerSeq is the sequence number of the ledger's last entry.
	// +optional
	LedgerSeq uint64 `json:"ledgerSeq,omitempty"`

	// LedgerHead is the evidence-branch commit of the ledger's last entry.
	// +optional
	LedgerHead string `json:"ledgerHead,omitempty"`

	// OpenProposals are the branches of proposals under review, as
	// <agent>:<branch>.
	// +optional
	OpenProposals []string `json:"openProposals,omitempty"`

	// Agents is each agent's state after the last pass, by name (at most
	// MaxStatusAgents; the daemon's /api/v1/status has all of them).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=250
	Agents []AgentState `json:"agents,omitempty"`
}

// MaxStatusAgents bounds status.agents, so that a repository of many
// agents keeps its object well under etcd's size limit.
const MaxStatusAgents = 250

// AgentState is one agent's part of the status: its own Ready and Stalled
// conditions (kstatus reads them as the repository's), its last run and
// why its due run is held back.
type AgentState struct {
	// Name is the agent's name.
	Name string `json:"name"`

	// Conditions are the agent's Ready and Stalled.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastRun is the id of its last run, and LastRunOutcome what became
	// of it (running, failed, proposal_open, merged, rejected, ...).
	// +optional
	LastRun string `json:"lastRun,omitempty"`
	// +optional
	LastRunOutcome string `json:"lastRunOutcome,omitempty"`

	// OpenProposals counts its proposals under review.
	// +optional
	OpenProposals int `json:"openProposals,omitempty"`

	// NextRun is when it next has work of its own.
	// +optional
	NextRun *metav1.Time `json:"nextRun,omitempty"`

	// Held is why its due run is held back, while that is so.
	// +optional
	Held string `json:"held,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=agentrepo;ar
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.lastAppliedRevision`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AgentRepository is a desired-state repository of agent tasks and
// policies, reconciled by `reconciler controller`.
type AgentRepository struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AgentRepositorySpec `json:"spec,omitempty"`
	// +kubebuilder:default={"observedGeneration":-1}
	Status AgentRepositoryStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions (meta.ObjectWithConditions).
func (in *AgentRepository) GetConditions() []metav1.Condition {
	return in.Status.Conditions
}

// SetConditions sets the status conditions (conditions.Setter).
func (in *AgentRepository) SetConditions(conditions []metav1.Condition) {
	in.Status.Conditions = conditions
}

// GetRequeueAfter returns the interval, DefaultInterval when unset.
func (in *AgentRepository) GetRequeueAfter() time.Duration {
	if in.Spec.Interval == nil || in.Spec.Interval.Duration <= 0 {
		return DefaultInterval
	}
	return in.Spec.Interval.Duration
}

// GetTimeout returns the timeout of one pass: spec.timeout, else the
// interval.
func (in *AgentRepository) GetTimeout() time.Duration {
	if in.Spec.Timeout != nil && in.Spec.Timeout.Duration > 0 {
		return in.Spec.Timeout.Duration
	}
	return in.GetRequeueAfter()
}

// GetBranch returns the branch, main when unset.
func (in *AgentRepository) GetBranch() string {
	if in.Spec.Branch == "" {
		return "main"
	}
	return in.Spec.Branch
}

// +kubebuilder:object:root=true

// AgentRepositoryList is a list of AgentRepository objects.
type AgentRepositoryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentRepository `json:"items"`
}
