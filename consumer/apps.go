package consumer

import "github.com/timbroadcast/timbroadcast/consumer/apps"

// App is one app (SDKAppID) the worker delivers to: several apps in one
// deployment (TIM_APPS_FILE), each its own Sender (key, region, standby),
// rate, call schedule and pause.
type App = apps.Spec
