<?php

declare(strict_types=1);

namespace App\Observers;

use App\Jobs\ResyncCourseUnitJob;
use App\Models\CourseUnit;
use App\Models\CourseUnitElement;
use Illuminate\Database\QueryException;
use Illuminate\Support\Facades\DB;
use Throwable;

/**
 * The old system: every element event recomputes its UE in PHP and writes it. A sync error
 * is handed to handleSyncError(), which queues ResyncCourseUnitJob for the errors it knows.
 */
class CourseUnitElementObserver
{
    public function created(CourseUnitElement $element): void
    {
        $this->syncCourseUnit($element->course_unit_id, 'created');
    }

    public function updated(CourseUnitElement $element): void
    {
        $this->syncCourseUnit($element->course_unit_id, 'updated');
        $previous = $element->getOriginal('course_unit_id');
        if ($element->wasChanged('course_unit_id') && $previous !== null) {
            $this->syncCourseUnit($previous, 'moved');
        }
    }

    public function deleted(CourseUnitElement $element): void
    {
        $this->syncCourseUnit($element->course_unit_id, 'deleted');
    }

    public function restored(CourseUnitElement $element): void
    {
        $this->syncCourseUnit($element->course_unit_id, 'restored');
    }

    public function forceDeleted(CourseUnitElement $element): void
    {
        $this->syncCourseUnit($element->course_unit_id, 'force_deleted');
    }

    private function syncCourseUnit($courseUnitId, string $action): void
    {
        if ($courseUnitId === null) {
            return;
        }
        try {
            // A savepoint when the writer is in a transaction: a failed sync leaves it usable.
            DB::transaction(function () use ($courseUnitId) {
                $unit = CourseUnit::find($courseUnitId);
                if ($unit !== null && $unit->auto_sync_enabled) {
                    $unit->syncFromElements();
                }
            });
        } catch (Throwable $e) {
            $this->handleSyncError($e, (int) $courseUnitId, $action);
        }
    }

    /**
     * QueryException: resync in 2 minutes; a deadlock (40P01): in 30 seconds; anything else:
     * no automatic resync.
     */
    public function handleSyncError(Throwable $e, int $courseUnitId, string $action): void
    {
        if (!$e instanceof QueryException) {
            return;
        }
        if ($e->getCode() === '40P01') {
            ResyncCourseUnitJob::dispatch($courseUnitId, 'deadlock_recovery')
                ->delay(now()->addSeconds(30));
            return;
        }
        ResyncCourseUnitJob::dispatch($courseUnitId, 'sync_error_recovery')
            ->delay(now()->addMinutes(2));
    }
}
