package fsm

// applied is what applyCommand returns for one entry.
type applied struct {
	Notification
	tableDirty bool
}

// applyCommand applies one decoded command at log index.
func (f *FSM) applyCommand(cmd *Command, index uint64) applied {
	return applied{Notification: Notification{Index: index, Command: cmd}}
}
