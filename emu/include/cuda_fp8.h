#pragma once
#include "emu_lowp.h"
