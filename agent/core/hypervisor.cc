#include "agent/core/hypervisor.h"

namespace novadt::core {

std::string_view DomainStateName(DomainState s) {
  switch (s) {
    case DomainState::kNoState: return "nostate";
    case DomainState::kRunning: return "running";
    case DomainState::kBlocked: return "blocked";
    case DomainState::kPaused: return "paused";
    case DomainState::kShutdown: return "shutdown";
    case DomainState::kShutoff: return "shutoff";
    case DomainState::kCrashed: return "crashed";
    case DomainState::kPmSuspended: return "pmsuspended";
  }
  return "unknown";
}

std::string_view DomainEventKindName(DomainEvent::Kind k) {
  switch (k) {
    case DomainEvent::Kind::kDefined: return "defined";
    case DomainEvent::Kind::kUndefined: return "undefined";
    case DomainEvent::Kind::kStarted: return "started";
    case DomainEvent::Kind::kSuspended: return "suspended";
    case DomainEvent::Kind::kResumed: return "resumed";
    case DomainEvent::Kind::kStopped: return "stopped";
    case DomainEvent::Kind::kShutdown: return "shutdown";
    case DomainEvent::Kind::kPmSuspended: return "pmsuspended";
    case DomainEvent::Kind::kCrashed: return "crashed";
    case DomainEvent::Kind::kUnknown: return "unknown";
  }
  return "unknown";
}

}  // namespace novadt::core
