package storage

import "fmt"

// CreateDataset assigns d a new ID in its pipeline and stores it.
func (tx *Tx) CreateDataset(d Dataset) (Dataset, error) {
	if d.Kind != KindData && d.Kind != KindFeedback {
		return Dataset{}, fmt.Errorf("dataset kind %q: %w", d.Kind, ErrInvalid)
	}
	if !oneOf(d.State, DatasetAccepted, DatasetQuarantined) {
		return Dataset{}, fmt.Errorf("new dataset state %q: want accepted or quarantined: %w", d.State, ErrInvalid)
	}
	id, _, err := tx.nextID(d.Pipeline, LetterDataset)
	if err != nil {
		return Dataset{}, err
	}
	d.ID = id
	tx.stamp(&d.Created, &d.Updated)
	return d, tx.putRec(kindDataset, &d, true)
}

// PutDataset rewrites an existing dataset (a state change, a release).
func (tx *Tx) PutDataset(d Dataset) error {
	if !oneOf(d.State, DatasetAccepted, DatasetQuarantined, DatasetReleased, DatasetExpired) {
		return fmt.Errorf("dataset %s state %q: %w", d.ID, d.State, ErrInvalid)
	}
	tx.stamp(&d.Created, &d.Updated)
	return tx.putRec(kindDataset, &d, false)
}

// Dataset reads one dataset.
func (tx *Tx) Dataset(id string) (Dataset, error) { return getRec[Dataset](tx.btx, kindDataset, id) }

// Datasets lists a pipeline's datasets in ID order ("" lists all).
func (tx *Tx) Datasets(pipeline string) ([]Dataset, error) {
	return listRec[Dataset](tx.btx, kindDataset, pipeline)
}

// CreateRun assigns r a new ID, stores it and links each dataset of its
// window to it (EdgeTrainedOn).
func (tx *Tx) CreateRun(r Run) (Run, error) {
	if r.State == "" {
		r.State = RunQueued
	}
	if !validRunState(r.State) {
		return Run{}, fmt.Errorf("run state %q: %w", r.State, ErrInvalid)
	}
	id, _, err := tx.nextID(r.Pipeline, LetterRun)
	if err != nil {
		return Run{}, err
	}
	r.ID = id
	tx.stamp(&r.Created, &r.Updated)
	if err := tx.putRec(kindRun, &r, true); err != nil {
		return Run{}, err
	}
	for _, d := range r.Datasets {
		if err := tx.Link(d, r.ID, EdgeTrainedOn); err != nil {
			return Run{}, err
		}
	}
	if r.GPU != "" {
		if err := tx.Link("gpu:"+r.GPU, r.ID, EdgeRanOn); err != nil {
			return Run{}, err
		}
	}
	return r, nil
}

// PutRun rewrites an existing run (state, reason, container, times).
func (tx *Tx) PutRun(r Run) error {
	if !validRunState(r.State) {
		return fmt.Errorf("run %s state %q: %w", r.ID, r.State, ErrInvalid)
	}
	tx.stamp(&r.Created, &r.Updated)
	return tx.putRec(kindRun, &r, false)
}

// Run reads one run.
func (tx *Tx) Run(id string) (Run, error) { return getRec[Run](tx.btx, kindRun, id) }

// Runs lists a pipeline's runs in ID order ("" lists all).
func (tx *Tx) Runs(pipeline string) ([]Run, error) { return listRec[Run](tx.btx, kindRun, pipeline) }

// CreateModel assigns m a new ID, stores it and links its run to it.
func (tx *Tx) CreateModel(m Model) (Model, error) {
	if m.State == "" {
		m.State = ModelCandidate
	}
	if !validModelState(m.State) {
		return Model{}, fmt.Errorf("model state %q: %w", m.State, ErrInvalid)
	}
	if m.Run == "" {
		return Model{}, fmt.Errorf("model without a run: %w", ErrInvalid)
	}
	if _, err := tx.Run(m.Run); err != nil {
		return Model{}, fmt.Errorf("model's run: %w", err)
	}
	id, _, err := tx.nextID(m.Pipeline, LetterModel)
	if err != nil {
		return Model{}, err
	}
	m.ID = id
	tx.stamp(&m.Created, &m.Updated)
	if err := tx.putRec(kindModel, &m, true); err != nil {
		return Model{}, err
	}
	return m, tx.Link(m.Run, m.ID, EdgeProduced)
}

// PutModel rewrites an existing model (state, metrics).
func (tx *Tx) PutModel(m Model) error {
	if !validModelState(m.State) {
		return fmt.Errorf("model %s state %q: %w", m.ID, m.State, ErrInvalid)
	}
	tx.stamp(&m.Created, &m.Updated)
	return tx.putRec(kindModel, &m, false)
}

// Model reads one model.
func (tx *Tx) Model(id string) (Model, error) { return getRec[Model](tx.btx, kindModel, id) }

// Models lists a pipeline's models in ID order ("" lists all).
func (tx *Tx) Models(pipeline string) ([]Model, error) {
	return listRec[Model](tx.btx, kindModel, pipeline)
}

// CreateDeployment assigns d a new ID, stores it and links its model to it
// and, if it replaced one, the previous deployment to it (EdgeRollback when
// d.Rollback, else EdgeReplaced).
func (tx *Tx) CreateDeployment(d Deployment) (Deployment, error) {
	if d.State == "" {
		d.State = DeployLive
	}
	if !oneOf(d.State, DeployLive, DeployStandby, DeployEnded) {
		return Deployment{}, fmt.Errorf("deployment state %q: %w", d.State, ErrInvalid)
	}
	if _, err := tx.Model(d.Model); err != nil {
		return Deployment{}, fmt.Errorf("deployment's model: %w", err)
	}
	id, _, err := tx.nextID(d.Pipeline, LetterDeployment)
	if err != nil {
		return Deployment{}, err
	}
	d.ID = id
	tx.stamp(&d.Created, &d.Updated)
	if err := tx.putRec(kindDeploy, &d, true); err != nil {
		return Deployment{}, err
	}
	if err := tx.Link(d.Model, d.ID, EdgeDeployed); err != nil {
		return Deployment{}, err
	}
	if d.Previous != "" {
		t := EdgeReplaced
		if d.Rollback {
			t = EdgeRollback
		}
		if err := tx.Link(d.Previous, d.ID, t); err != nil {
			return Deployment{}, err
		}
	}
	return d, nil
}

// PutDeployment rewrites an existing deployment (its state).
func (tx *Tx) PutDeployment(d Deployment) error {
	if !oneOf(d.State, DeployLive, DeployStandby, DeployEnded) {
		return fmt.Errorf("deployment %s state %q: %w", d.ID, d.State, ErrInvalid)
	}
	tx.stamp(&d.Created, &d.Updated)
	return tx.putRec(kindDeploy, &d, false)
}

// Deployment reads one deployment.
func (tx *Tx) Deployment(id string) (Deployment, error) {
	return getRec[Deployment](tx.btx, kindDeploy, id)
}

// Deployments lists a pipeline's deployments in ID order ("" lists all).
func (tx *Tx) Deployments(pipeline string) ([]Deployment, error) {
	return listRec[Deployment](tx.btx, kindDeploy, pipeline)
}

func oneOf[T comparable](v T, set ...T) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func validRunState(s RunState) bool {
	return oneOf(s, RunQueued, RunRunning, RunSucceeded, RunFailed, RunCancelled)
}

func validModelState(s ModelState) bool {
	return oneOf(s, ModelCandidate, ModelEvaluating, ModelRejected, ModelLive, ModelStandby, ModelRetired, ModelRolledBack)
}
