<?php

declare(strict_types=1);

namespace App\Jobs;

use App\Models\CourseUnit;
use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;
use Illuminate\Support\Facades\DB;
use RuntimeException;

/** The old deferred resync of one UE: 3 tries, 30/60/120 s apart. */
class ResyncCourseUnitJob implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels;

    public $tries = 3;
    public $backoff = [30, 60, 120];

    protected int $courseUnitId;
    protected string $reason;

    public function __construct(int $courseUnitId, string $reason = 'sync_error_recovery')
    {
        $this->courseUnitId = $courseUnitId;
        $this->reason = $reason;
    }

    public function handle(): void
    {
        DB::transaction(function () {
            // The seed's limit: one resync transaction waits at most this long for a lock.
            DB::statement("SELECT set_config('lock_timeout', ?, true)", [
                config('resync.job_lock_timeout'),
            ]);
            $unit = CourseUnit::lockForUpdate()->find($this->courseUnitId);
            if ($unit === null) {
                return;  // the UE is gone: nothing to resync
            }
            $unit->syncFromElements(true);
            // Post-sync validation.
            $fresh = $unit->activeElements()->count();
            if ($fresh !== $unit->elements_count) {
                throw new RuntimeException("course unit {$unit->id}: validation failed after resync");
            }
        });
    }
}
